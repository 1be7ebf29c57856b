package imagestore

import (
	"context"
	"fmt"
	"testing"

	"github.com/cachepool/cachepool/services/imagestore/blob"
	"github.com/cachepool/cachepool/services/imagestore/meta"
)

// BenchmarkPut compares a put through the bus (blob + row + node fill +
// old object delete + reply) with its baseline: the same blob and row work
// called directly (file store and SQLite in a temp dir).
func BenchmarkPut(b *testing.B) {
	data := make([]byte, 64<<10)
	b.Run("bus-64KiB", func(b *testing.B) {
		e := newEnv(b, "n1", "n2")
		e.start(Config{}, b.TempDir())
		b.SetBytes(int64(len(data)))
		b.ResetTimer()
		for i := range b.N {
			if _, err := e.put(fmt.Sprint("k", i%100), "image/png", data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("direct-64KiB", func(b *testing.B) {
		fs, db := openDirect(b)
		ctx := context.Background()
		b.SetBytes(int64(len(data)))
		b.ResetTimer()
		for i := range b.N {
			name, err := fs.Put(ctx, data)
			if err != nil {
				b.Fatal(err)
			}
			up, err := db.Upsert(ctx, fmt.Sprint("k", i%100), name, "image/png", int64(len(data)))
			if err != nil {
				b.Fatal(err)
			}
			if up.OldObject != "" {
				_ = fs.Delete(ctx, up.OldObject)
			}
		}
	})
}

// BenchmarkLoad compares a load (a cache miss: row, blob, version re-check,
// node fill, reply) with its baseline: the row and blob reads alone.
func BenchmarkLoad(b *testing.B) {
	data := make([]byte, 64<<10)
	b.Run("bus-64KiB", func(b *testing.B) {
		e := newEnv(b, "n1", "n2")
		e.start(Config{}, b.TempDir())
		if _, err := e.put("k", "image/png", data); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(data)))
		b.ResetTimer()
		for range b.N {
			if _, err := e.load("k"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("direct-64KiB", func(b *testing.B) {
		fs, db := openDirect(b)
		ctx := context.Background()
		name, _ := fs.Put(ctx, data)
		if _, err := db.Upsert(ctx, "k", name, "image/png", int64(len(data))); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(data)))
		b.ResetTimer()
		for range b.N {
			row, err := db.Get(ctx, "k")
			if err != nil {
				b.Fatal(err)
			}
			if _, err := fs.Get(ctx, row.Object); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func openDirect(b *testing.B) (*blob.File, *meta.Store) {
	dir := b.TempDir()
	fs, err := blob.OpenFile(dir + "/blobs")
	if err != nil {
		b.Fatal(err)
	}
	db, err := meta.Open(context.Background(), "sqlite", dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = fs.Close(); _ = db.Close() })
	return fs, db
}
