package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	"github.com/uptrace/bun/driver/sqliteshim"
)

// Image is one key's row.
type Image struct {
	bun.BaseModel `bun:"table:images"`
	Key           string    `bun:"key,pk"`
	Object        string    `bun:"object,notnull"`
	Version       int64     `bun:"version,notnull"`
	ContentType   string    `bun:"content_type,notnull"`
	Size          int64     `bun:"size,notnull"`
	UpdatedAt     time.Time `bun:"updated_at,notnull"`
}

// ErrNotFound reports a key without a row.
var ErrNotFound = errors.New("meta: key not found")

// SQLiteFile is the database file name in the data dir.
const SQLiteFile = "cachepool.db"

// sqliteBusyTimeout is how long a SQLite writer waits for another.
const sqliteBusyTimeout = 10 * time.Second

// Store is the metadata database.
type Store struct {
	db *bun.DB
}

// Open connects to the database described by spec ("" or "sqlite": the
// file <dataDir>/cachepool.db; "postgres://..." or "postgresql://...": a
// PostgreSQL DSN, where extra parameters such as search_path are passed to
// the server) and applies the migrations.
func Open(ctx context.Context, spec, dataDir string) (*Store, error) {
	var db *bun.DB
	switch {
	case spec == "" || spec == "sqlite":
		if dataDir == "" {
			return nil, errors.New("meta: sqlite needs a data dir")
		}
		sqldb, err := sql.Open(sqliteshim.ShimName, sqliteDSN(filepath.Join(dataDir, SQLiteFile)))
		if err != nil {
			return nil, fmt.Errorf("meta: open sqlite: %w", err)
		}
		db = bun.NewDB(sqldb, sqlitedialect.New())
	case strings.HasPrefix(spec, "postgres://"), strings.HasPrefix(spec, "postgresql://"):
		sqldb, err := sql.Open("pgx", spec)
		if err != nil {
			return nil, fmt.Errorf("meta: open postgres: %w", err)
		}
		sqldb.SetMaxOpenConns(32)
		sqldb.SetMaxIdleConns(8)
		sqldb.SetConnMaxIdleTime(5 * time.Minute)
		db = bun.NewDB(sqldb, pgdialect.New())
	default:
		return nil, fmt.Errorf("meta: database must be \"sqlite\" or a postgres:// URL, got %q", redact(spec))
	}
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("meta: connect to %s: %w", redact(spec), err)
	}
	if err := migrate(ctx, db); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("meta: migrate %s: %w", redact(spec), err)
	}
	return &Store{db: db}, nil
}

// sqliteDSN sets WAL mode (readers never block the writer), a busy timeout
// (concurrent writers wait instead of failing) and immediate transactions
// (a writer takes the write lock at BEGIN, so read-then-write transactions
// cannot deadlock on a lock upgrade).
func sqliteDSN(path string) string {
	ms := sqliteBusyTimeout.Milliseconds()
	if sqliteshim.DriverName() == "sqlite" { // modernc.org/sqlite
		return fmt.Sprintf("file:%s?_pragma=busy_timeout(%d)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate", path, ms)
	}
	return fmt.Sprintf("file:%s?_busy_timeout=%d&_journal_mode=WAL&_synchronous=NORMAL&_txlock=immediate", path, ms) // mattn/go-sqlite3
}

// redact hides a password in a DSN for error messages.
func redact(spec string) string {
	u, err := url.Parse(spec)
	if err != nil || u.User == nil {
		return spec
	}
	return u.Redacted()
}

// Dialect names the database ("sqlite" or "pg").
func (s *Store) Dialect() string { return s.db.Dialect().Name().String() }

// DB exposes the bun handle (for tests and diagnostics).
func (s *Store) DB() *bun.DB { return s.db }

// Close closes the connection pool.
func (s *Store) Close() error { return s.db.Close() }

// Upserted is the outcome of an Upsert.
type Upserted struct {
	// Version is the key's new version: 1 for a new key, else the old + 1.
	Version int64
	// OldObject is the object the row pointed to before ("" for a new key);
	// nobody references it any more.
	OldObject string
}

// maxUpsertAttempts bounds the retries when another process changes the
// same key between our read and our write.
const maxUpsertAttempts = 20

// Upsert points key at object with the next version, atomically: the read
// of the old row and the write of the new one happen in one transaction
// (immediate on SQLite; on PostgreSQL the row is locked with FOR UPDATE and
// the update is conditional on the version read), so two upserts of one key
// never get the same version and each learns exactly the object it replaced.
func (s *Store) Upsert(ctx context.Context, key, object, contentType string, size int64) (Upserted, error) {
	var out Upserted
	err := s.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		now := time.Now().UTC()
		for range maxUpsertAttempts {
			var cur Image
			q := tx.NewSelect().Model(&cur).Where("? = ?", bun.Ident("key"), key)
			if s.db.Dialect().Name() == dialect.PG {
				q = q.For("UPDATE")
			}
			err := q.Scan(ctx)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				row := &Image{Key: key, Object: object, Version: 1, ContentType: contentType, Size: size, UpdatedAt: now}
				res, err := tx.NewInsert().Model(row).On("CONFLICT DO NOTHING").Exec(ctx)
				if err != nil {
					return err
				}
				if n, _ := res.RowsAffected(); n == 1 {
					out = Upserted{Version: 1}
					return nil
				}
				// Another process inserted the key first: read it again.
			case err != nil:
				return err
			default:
				res, err := tx.NewUpdate().Model((*Image)(nil)).
					Set("object = ?", object).
					Set("version = ?", cur.Version+1).
					Set("content_type = ?", contentType).
					Set("size = ?", size).
					Set("updated_at = ?", now).
					Where("? = ?", bun.Ident("key"), key).
					Where("version = ?", cur.Version).
					Exec(ctx)
				if err != nil {
					return err
				}
				if n, _ := res.RowsAffected(); n == 1 {
					out = Upserted{Version: cur.Version + 1, OldObject: cur.Object}
					return nil
				}
			}
		}
		return fmt.Errorf("key %q changed concurrently %d times in a row", key, maxUpsertAttempts)
	})
	if err != nil {
		return Upserted{}, fmt.Errorf("meta: upsert: %w", err)
	}
	return out, nil
}

// Get returns key's row, or an error wrapping ErrNotFound.
func (s *Store) Get(ctx context.Context, key string) (Image, error) {
	var row Image
	err := s.db.NewSelect().Model(&row).Where("? = ?", bun.Ident("key"), key).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return Image{}, fmt.Errorf("%w: %q", ErrNotFound, key)
	}
	if err != nil {
		return Image{}, fmt.Errorf("meta: get: %w", err)
	}
	return row, nil
}

// CurrentVersion returns key's version, 0 when it has no row.
func (s *Store) CurrentVersion(ctx context.Context, key string) (int64, error) {
	var v []int64
	err := s.db.NewSelect().Model((*Image)(nil)).Column("version").Where("? = ?", bun.Ident("key"), key).Scan(ctx, &v)
	if err != nil {
		return 0, fmt.Errorf("meta: current version: %w", err)
	}
	if len(v) == 0 {
		return 0, nil
	}
	return v[0], nil
}

// ListKeys returns every key, sorted by bytes (the same order on every
// database, whatever its collation).
func (s *Store) ListKeys(ctx context.Context) ([]string, error) {
	keys := []string{}
	if err := s.db.NewSelect().Model((*Image)(nil)).Column("key").Scan(ctx, &keys); err != nil {
		return nil, fmt.Errorf("meta: list keys: %w", err)
	}
	slices.Sort(keys)
	return keys, nil
}

// DeleteAll deletes every row and returns how many there were.
func (s *Store) DeleteAll(ctx context.Context) (int64, error) {
	res, err := s.db.NewDelete().Model((*Image)(nil)).Where("1 = 1").Exec(ctx)
	if err != nil {
		return 0, fmt.Errorf("meta: delete all: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("meta: delete all: %w", err)
	}
	return n, nil
}

// Count returns the number of rows.
func (s *Store) Count(ctx context.Context) (int64, error) {
	n, err := s.db.NewSelect().Model((*Image)(nil)).Count(ctx)
	if err != nil {
		return 0, fmt.Errorf("meta: count: %w", err)
	}
	return int64(n), nil
}
