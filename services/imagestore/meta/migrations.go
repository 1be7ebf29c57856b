package meta

import (
	"context"
	"fmt"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"
)

// migration is one schema step. Steps are never edited once released; a
// change is a new step. Each step builds its SQL with bun so that the same
// step runs on SQLite and PostgreSQL.
type migration struct {
	id   int64
	name string
	up   func(ctx context.Context, tx bun.Tx) error
}

// imageV1 is the images table as migration 1 created it (frozen here so
// that later model changes cannot alter what migration 1 does).
type imageV1 struct {
	bun.BaseModel `bun:"table:images"`
	Key           string    `bun:"key,pk"`
	Object        string    `bun:"object,notnull"`
	Version       int64     `bun:"version,notnull"`
	ContentType   string    `bun:"content_type,notnull"`
	Size          int64     `bun:"size,notnull"`
	UpdatedAt     time.Time `bun:"updated_at,notnull"`
}

var migrations = []migration{
	{1, "create images", func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewCreateTable().Model((*imageV1)(nil)).IfNotExists().Exec(ctx)
		return err
	}},
}

// appliedMigration records one applied step.
type appliedMigration struct {
	bun.BaseModel `bun:"table:cachepool_migrations"`
	ID            int64     `bun:"id,pk"`
	Name          string    `bun:"name,notnull"`
	AppliedAt     time.Time `bun:"applied_at,notnull"`
}

// pgMigrationLock is the advisory lock id that serializes migrations of
// several processes starting at once on one PostgreSQL database.
const pgMigrationLock = 0x63616368 // "cach"

// migrate applies the missing steps in one transaction. On PostgreSQL the
// transaction holds an advisory lock; on SQLite it is an immediate
// (write-locked) transaction. Either way concurrent starters wait for each
// other, and a crash leaves no stale lock behind.
func migrate(ctx context.Context, db *bun.DB) error {
	return db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if db.Dialect().Name() == dialect.PG {
			if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(?)", pgMigrationLock); err != nil {
				return fmt.Errorf("lock: %w", err)
			}
		}
		if _, err := tx.NewCreateTable().Model((*appliedMigration)(nil)).IfNotExists().Exec(ctx); err != nil {
			return fmt.Errorf("create migrations table: %w", err)
		}
		var done []int64
		if err := tx.NewSelect().Model((*appliedMigration)(nil)).Column("id").Scan(ctx, &done); err != nil {
			return fmt.Errorf("read migrations: %w", err)
		}
		applied := map[int64]bool{}
		for _, id := range done {
			applied[id] = true
		}
		for _, m := range migrations {
			if applied[m.id] {
				continue
			}
			if err := m.up(ctx, tx); err != nil {
				return fmt.Errorf("migration %d (%s): %w", m.id, m.name, err)
			}
			rec := &appliedMigration{ID: m.id, Name: m.name, AppliedAt: time.Now().UTC()}
			if _, err := tx.NewInsert().Model(rec).Exec(ctx); err != nil {
				return fmt.Errorf("record migration %d: %w", m.id, err)
			}
		}
		return nil
	})
}
