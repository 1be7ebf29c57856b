package meta_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cachepool/cachepool/services/imagestore/meta"
	_ "github.com/jackc/pgx/v5/stdlib"
)

// postgresDSN is the machine's PostgreSQL (trust auth); override with
// CACHEPOOL_TEST_POSTGRES.
func postgresDSN() string {
	if dsn := os.Getenv("CACHEPOOL_TEST_POSTGRES"); dsn != "" {
		return dsn
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

type factory struct {
	name string
	open func(t *testing.T) *meta.Store
}

func factories() []factory {
	return []factory{
		{"sqlite", func(t *testing.T) *meta.Store { return openSQLite(t, t.TempDir()) }},
		{"postgres", func(t *testing.T) *meta.Store { return openPostgres(t) }},
	}
}

func openSQLite(t *testing.T, dir string) *meta.Store {
	t.Helper()
	s, err := meta.Open(context.Background(), "sqlite", dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// openPostgres opens a store in a fresh schema, dropped after the test. It
// skips only when PostgreSQL is unreachable and CI is not set.
func openPostgres(t *testing.T) *meta.Store {
	t.Helper()
	ctx := context.Background()
	admin, err := sql.Open("pgx", postgresDSN())
	if err == nil {
		err = admin.PingContext(ctx)
	}
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("PostgreSQL unreachable at %s (set CI to make this a failure): %v", postgresDSN(), err)
		}
		t.Fatalf("PostgreSQL unreachable at %s: %v", postgresDSN(), err)
	}
	t.Cleanup(func() { _ = admin.Close() })
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "imagestore_test_" + hex.EncodeToString(b[:])
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := admin.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	s, err := meta.Open(ctx, postgresDSN()+"&search_path="+schema, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if s.Dialect() != "pg" {
		t.Fatalf("dialect = %s", s.Dialect())
	}
	return s
}

func TestStoreContract(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, s *meta.Store)
	}{
		{"a new key starts at version 1 with no old object", func(t *testing.T, s *meta.Store) {
			up := mustUpsert(t, s, "cat.png", "obj1", "image/png", 10)
			if up.Version != 1 || up.OldObject != "" {
				t.Fatalf("upsert = %+v, want version 1, no old object", up)
			}
			row, err := s.Get(context.Background(), "cat.png")
			if err != nil {
				t.Fatal(err)
			}
			if row.Key != "cat.png" || row.Object != "obj1" || row.Version != 1 || row.ContentType != "image/png" || row.Size != 10 || row.UpdatedAt.IsZero() {
				t.Fatalf("row = %+v", row)
			}
		}},
		{"each upsert adds one to the version and returns the replaced object", func(t *testing.T, s *meta.Store) {
			mustUpsert(t, s, "k", "o1", "image/png", 1)
			for i := 2; i <= 5; i++ {
				up := mustUpsert(t, s, "k", fmt.Sprintf("o%d", i), "image/jpeg", int64(i))
				if up.Version != int64(i) || up.OldObject != fmt.Sprintf("o%d", i-1) {
					t.Fatalf("upsert %d = %+v", i, up)
				}
			}
			row, _ := s.Get(context.Background(), "k")
			if row.Object != "o5" || row.Version != 5 || row.ContentType != "image/jpeg" || row.Size != 5 {
				t.Fatalf("row = %+v", row)
			}
			if v, err := s.CurrentVersion(context.Background(), "k"); err != nil || v != 5 {
				t.Fatalf("current version = %d, %v", v, err)
			}
		}},
		{"keys are independent", func(t *testing.T, s *meta.Store) {
			mustUpsert(t, s, "a", "oa", "", 1)
			mustUpsert(t, s, "a", "oa2", "", 1)
			if up := mustUpsert(t, s, "b", "ob", "", 1); up.Version != 1 {
				t.Fatalf("b = %+v", up)
			}
		}},
		{"a missing key is ErrNotFound and version 0", func(t *testing.T, s *meta.Store) {
			if _, err := s.Get(context.Background(), "nope"); !errors.Is(err, meta.ErrNotFound) {
				t.Fatalf("err = %v", err)
			}
			if v, err := s.CurrentVersion(context.Background(), "nope"); err != nil || v != 0 {
				t.Fatalf("current version = %d, %v", v, err)
			}
		}},
		{"unicode and punctuation keys are stored verbatim", func(t *testing.T, s *meta.Store) {
			keys := []string{"日本語.png", "a'b\"c", "x;DROP TABLE images;--", "émoji-🙂", "100%_done"}
			for _, k := range keys {
				mustUpsert(t, s, k, "o", "", 1)
			}
			for _, k := range keys {
				if row, err := s.Get(context.Background(), k); err != nil || row.Key != k {
					t.Fatalf("get %q = %+v, %v", k, row, err)
				}
			}
		}},
		{"list keys is sorted by bytes and empty is not nil", func(t *testing.T, s *meta.Store) {
			got, err := s.ListKeys(context.Background())
			if err != nil || got == nil || len(got) != 0 {
				t.Fatalf("empty list = %#v, %v", got, err)
			}
			in := []string{"b", "B", "a", "_z", "ä", "a1", "Z"}
			for _, k := range in {
				mustUpsert(t, s, k, "o", "", 1)
			}
			mustUpsert(t, s, "a", "o2", "", 1)
			got, err = s.ListKeys(context.Background())
			want := slices.Sorted(slices.Values(in))
			if err != nil || !slices.Equal(got, want) {
				t.Fatalf("list = %v, %v; want %v", got, err, want)
			}
		}},
		{"delete all returns the count and empties the table", func(t *testing.T, s *meta.Store) {
			ctx := context.Background()
			if n, err := s.DeleteAll(ctx); err != nil || n != 0 {
				t.Fatalf("empty delete all = %d, %v", n, err)
			}
			for i := range 7 {
				mustUpsert(t, s, fmt.Sprint(i), "o", "", 1)
			}
			if n, err := s.DeleteAll(ctx); err != nil || n != 7 {
				t.Fatalf("delete all = %d, %v; want 7", n, err)
			}
			if n, err := s.Count(ctx); err != nil || n != 0 {
				t.Fatalf("count = %d, %v", n, err)
			}
			// Versions start again at 1.
			if up := mustUpsert(t, s, "0", "o", "", 1); up.Version != 1 {
				t.Fatalf("after delete all: %+v", up)
			}
		}},
		{"concurrent upserts of one key get distinct versions and chain objects", func(t *testing.T, s *meta.Store) {
			const n = 40
			type res struct {
				obj string
				up  meta.Upserted
				err error
			}
			out := make(chan res, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					obj := fmt.Sprintf("obj-%02d", i)
					up, err := s.Upsert(context.Background(), "hot", obj, "image/png", int64(i))
					out <- res{obj, up, err}
				})
			}
			wg.Wait()
			close(out)
			byVersion := map[int64]res{}
			for r := range out {
				if r.err != nil {
					t.Fatal(r.err)
				}
				if _, dup := byVersion[r.up.Version]; dup {
					t.Fatalf("version %d given twice", r.up.Version)
				}
				byVersion[r.up.Version] = r
			}
			// Versions are exactly 1..n, and version v replaced the object
			// written by version v-1: no object is lost or replaced twice.
			for v := int64(1); v <= n; v++ {
				r, ok := byVersion[v]
				if !ok {
					t.Fatalf("version %d missing", v)
				}
				want := ""
				if v > 1 {
					want = byVersion[v-1].obj
				}
				if r.up.OldObject != want {
					t.Fatalf("version %d replaced %q, want %q", v, r.up.OldObject, want)
				}
			}
			row, _ := s.Get(context.Background(), "hot")
			if row.Version != n || row.Object != byVersion[n].obj {
				t.Fatalf("final row = %+v, want version %d object %s", row, n, byVersion[n].obj)
			}
		}},
		{"a cancelled context fails without changing anything", func(t *testing.T, s *meta.Store) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if _, err := s.Upsert(ctx, "k", "o", "", 1); err == nil {
				t.Fatal("upsert with a cancelled context succeeded")
			}
			if v, _ := s.CurrentVersion(context.Background(), "k"); v != 0 {
				t.Fatalf("version = %d after a failed upsert", v)
			}
		}},
	}
	for _, f := range factories() {
		for _, c := range cases {
			t.Run(f.name+"/"+c.name, func(t *testing.T) { c.run(t, f.open(t)) })
		}
	}
}

func mustUpsert(t *testing.T, s *meta.Store, key, obj, ct string, size int64) meta.Upserted {
	t.Helper()
	up, err := s.Upsert(context.Background(), key, obj, ct, size)
	if err != nil {
		t.Fatalf("upsert %q: %v", key, err)
	}
	return up
}

// TestReopenKeepsRowsAndMigratesOnce opens the same SQLite file twice (the
// second open must find the schema in place) and from two stores at once.
func TestReopenKeepsRowsAndMigratesOnce(t *testing.T) {
	dir := t.TempDir()
	a := openSQLite(t, dir)
	mustUpsert(t, a, "k", "o1", "image/png", 1)
	b := openSQLite(t, dir)
	if up := mustUpsert(t, b, "k", "o2", "image/png", 1); up.Version != 2 || up.OldObject != "o1" {
		t.Fatalf("second store upsert = %+v", up)
	}
	var n int
	if err := b.DB().NewSelect().Table("cachepool_migrations").ColumnExpr("count(*)").Scan(context.Background(), &n); err != nil || n != 1 {
		t.Fatalf("migrations recorded = %d, %v", n, err)
	}
}

// TestTwoSQLiteStoresWriteConcurrently checks WAL + busy timeout: two
// connection pools (as two processes would) write one file at once.
func TestTwoSQLiteStoresWriteConcurrently(t *testing.T) {
	dir := t.TempDir()
	stores := []*meta.Store{openSQLite(t, dir), openSQLite(t, dir)}
	errs := make(chan error, 100)
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() {
			_, err := stores[i%2].Upsert(context.Background(), fmt.Sprint(i%10), "o", "", 1)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for k := range 10 {
		if v, _ := stores[0].CurrentVersion(context.Background(), fmt.Sprint(k)); v != 10 {
			t.Fatalf("key %d version = %d, want 10", k, v)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := meta.Open(ctx, "mysql://x", t.TempDir()); err == nil {
		t.Error("unknown database accepted")
	}
	if _, err := meta.Open(ctx, "sqlite", ""); err == nil {
		t.Error("sqlite without a data dir accepted")
	}
	_, err := meta.Open(ctx, "postgres://postgres:secret@127.0.0.1:1/test?sslmode=disable&connect_timeout=2", "")
	if err == nil {
		t.Fatal("unreachable postgres accepted")
	}
	if msg := err.Error(); !strings.Contains(msg, "127.0.0.1:1") || strings.Contains(msg, "secret") {
		t.Errorf("error should name the host and hide the password: %s", msg)
	}
}
