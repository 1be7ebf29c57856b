package blob_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/cachepool/cachepool/services/imagestore/blob"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// factory opens a fresh, empty store for one test.
type factory struct {
	name string
	open func(t *testing.T) blob.Store
}

func factories() []factory {
	return []factory{
		{"file", func(t *testing.T) blob.Store {
			s, err := blob.OpenFile(filepath.Join(t.TempDir(), "blobs"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return s
		}},
		{"s3", func(t *testing.T) blob.Store {
			return openS3(t, fakeS3(t), "")
		}},
	}
}

// fakeS3 serves a gofakes3 in-memory backend over plain HTTP.
func fakeS3(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
	t.Cleanup(srv.Close)
	return srv.URL
}

// openS3 opens a store through a real aws-sdk-go-v2 client, parsed from a
// URL the way the service parses its --blob-store flag.
func openS3(t *testing.T, endpoint, prefix string) *blob.S3 {
	t.Helper()
	raw := fmt.Sprintf("s3://images/%s?region=us-east-1&endpoint=%s&path_style=true&access_key_id=test&secret_access_key=test&create_bucket=true", prefix, endpoint)
	cfg, err := blob.ParseS3URL(raw)
	if err != nil {
		t.Fatal(err)
	}
	s, err := blob.OpenS3(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStoreContract(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, s blob.Store)
	}{
		{"put then get returns the bytes under a fresh valid name", func(t *testing.T, s blob.Store) {
			ctx := context.Background()
			a, b := []byte("first image"), bytes.Repeat([]byte{0, 1, 2, 255}, 64<<10)
			na := mustPut(t, s, a)
			nb := mustPut(t, s, b)
			if na == nb {
				t.Fatalf("two puts got the same name %q", na)
			}
			for _, n := range []string{na, nb} {
				if err := blob.ValidName(n); err != nil {
					t.Fatal(err)
				}
			}
			for name, want := range map[string][]byte{na: a, nb: b} {
				got, err := s.Get(ctx, name)
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("get %s: %d bytes, err %v; want %d bytes", name, len(got), err, len(want))
				}
			}
		}},
		{"an empty object round-trips", func(t *testing.T, s blob.Store) {
			n := mustPut(t, s, nil)
			got, err := s.Get(context.Background(), n)
			if err != nil || len(got) != 0 {
				t.Fatalf("get: %q, %v", got, err)
			}
		}},
		{"get of a missing object is ErrNotFound", func(t *testing.T, s blob.Store) {
			_, err := s.Get(context.Background(), blob.NewName())
			if !errors.Is(err, blob.ErrNotFound) {
				t.Fatalf("err = %v, want ErrNotFound", err)
			}
		}},
		{"names that the store did not generate are refused", func(t *testing.T, s blob.Store) {
			ctx := context.Background()
			for _, bad := range []string{"", "../../etc/passwd", "..", "/etc/passwd", "ABCDEF0123456789ABCDEF0123456789", "x" + blob.NewName()[1:], blob.NewName() + "/"} {
				if _, err := s.Get(ctx, bad); !errors.Is(err, blob.ErrBadName) {
					t.Errorf("get %q: err = %v, want ErrBadName", bad, err)
				}
				if err := s.Delete(ctx, bad); !errors.Is(err, blob.ErrBadName) {
					t.Errorf("delete %q: err = %v, want ErrBadName", bad, err)
				}
			}
		}},
		{"delete removes the object and is idempotent", func(t *testing.T, s blob.Store) {
			ctx := context.Background()
			n := mustPut(t, s, []byte("x"))
			keep := mustPut(t, s, []byte("y"))
			for range 2 {
				if err := s.Delete(ctx, n); err != nil {
					t.Fatalf("delete: %v", err)
				}
			}
			if _, err := s.Get(ctx, n); !errors.Is(err, blob.ErrNotFound) {
				t.Fatalf("get after delete: %v", err)
			}
			if got, err := s.Get(ctx, keep); err != nil || string(got) != "y" {
				t.Fatalf("the other object: %q, %v", got, err)
			}
		}},
		{"list returns exactly the stored names", func(t *testing.T, s blob.Store) {
			var want []string
			for i := range 5 {
				want = append(want, mustPut(t, s, []byte{byte(i)}))
			}
			got, err := s.List(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("list = %v, want %v", got, want)
			}
		}},
		{"delete all counts and removes everything", func(t *testing.T, s blob.Store) {
			ctx := context.Background()
			if n, err := s.DeleteAll(ctx); err != nil || n != 0 {
				t.Fatalf("empty delete all = %d, %v", n, err)
			}
			names := []string{mustPut(t, s, []byte("a")), mustPut(t, s, []byte("b")), mustPut(t, s, []byte("c"))}
			n, err := s.DeleteAll(ctx)
			if err != nil || n != 3 {
				t.Fatalf("delete all = %d, %v; want 3", n, err)
			}
			for _, name := range names {
				if _, err := s.Get(ctx, name); !errors.Is(err, blob.ErrNotFound) {
					t.Fatalf("get after delete all: %v", err)
				}
			}
			if left, err := s.List(ctx); err != nil || len(left) != 0 {
				t.Fatalf("list after delete all = %v, %v", left, err)
			}
		}},
		{"concurrent puts all land", func(t *testing.T, s blob.Store) {
			ctx := context.Background()
			var mu sync.Mutex
			got := map[string][]byte{}
			var wg sync.WaitGroup
			errs := make(chan error, 32)
			for i := range 32 {
				wg.Go(func() {
					data := fmt.Appendf(nil, "image %d", i)
					n, err := s.Put(ctx, data)
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					got[n] = data
					mu.Unlock()
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if len(got) != 32 {
				t.Fatalf("%d distinct names, want 32", len(got))
			}
			for n, want := range got {
				if b, err := s.Get(ctx, n); err != nil || !bytes.Equal(b, want) {
					t.Fatalf("get %s = %q, %v", n, b, err)
				}
			}
		}},
		{"a cancelled context fails the put", func(t *testing.T, s blob.Store) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if _, err := s.Put(ctx, []byte("x")); err == nil {
				t.Fatal("put with a cancelled context succeeded")
			}
		}},
	}
	for _, f := range factories() {
		for _, c := range cases {
			t.Run(f.name+"/"+c.name, func(t *testing.T) { c.run(t, f.open(t)) })
		}
	}
}

// TestDeleteAllManyObjects stores more objects than one S3 list page or
// DeleteObjects call holds.
func TestDeleteAllManyObjects(t *testing.T) {
	const n = 1200
	for _, f := range factories() {
		t.Run(f.name, func(t *testing.T) {
			s := f.open(t)
			ctx := context.Background()
			sem := make(chan struct{}, 16)
			errs := make(chan error, n)
			var wg sync.WaitGroup
			for i := range n {
				sem <- struct{}{}
				wg.Go(func() {
					defer func() { <-sem }()
					if _, err := s.Put(ctx, []byte{byte(i), byte(i >> 8)}); err != nil {
						errs <- err
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if names, err := s.List(ctx); err != nil || len(names) != n {
				t.Fatalf("list = %d names, %v; want %d", len(names), err, n)
			}
			got, err := s.DeleteAll(ctx)
			if err != nil || got != n {
				t.Fatalf("delete all = %d, %v; want %d", got, err, n)
			}
			if names, err := s.List(ctx); err != nil || len(names) != 0 {
				t.Fatalf("list after = %d names, %v", len(names), err)
			}
		})
	}
}

func mustPut(t *testing.T, s blob.Store, data []byte) string {
	t.Helper()
	n, err := s.Put(context.Background(), data)
	if err != nil {
		t.Fatalf("put: %v", err)
	}
	return n
}

func TestFileStoreStaysInItsDirectory(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "data", "blobs")
	s, err := blob.OpenFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	victim := filepath.Join(base, "victim")
	if err := os.WriteFile(victim, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, bad := range []string{"../../victim", "../victim", victim} {
		if err := s.Delete(ctx, bad); err == nil {
			t.Errorf("delete %q succeeded", bad)
		}
		if _, err := s.Get(ctx, bad); err == nil {
			t.Errorf("get %q succeeded", bad)
		}
	}
	name := mustPut(t, s, []byte("img"))
	if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
		t.Fatalf("object is not a file in the blob dir: %v", err)
	}
	// A leftover temporary file (a crash mid-write) is never listed, and
	// delete-all removes it without counting it.
	if err := os.WriteFile(filepath.Join(dir, ".tmp-"+blob.NewName()), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	if names, _ := s.List(ctx); len(names) != 1 || names[0] != name {
		t.Fatalf("list = %v, want [%s]", names, name)
	}
	if n, err := s.DeleteAll(ctx); err != nil || n != 1 {
		t.Fatalf("delete all = %d, %v; want 1", n, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Fatalf("blob dir not empty after delete all: %v", entries)
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "keep me" {
		t.Fatalf("file outside the blob dir changed: %q, %v", b, err)
	}
}

func TestS3PrefixesAreIsolated(t *testing.T) {
	endpoint := fakeS3(t)
	a, b := openS3(t, endpoint, "a"), openS3(t, endpoint, "b")
	ctx := context.Background()
	mustPut(t, a, []byte("1"))
	nb := mustPut(t, b, []byte("2"))
	if n, err := a.DeleteAll(ctx); err != nil || n != 1 {
		t.Fatalf("delete all on a = %d, %v", n, err)
	}
	if got, err := b.Get(ctx, nb); err != nil || string(got) != "2" {
		t.Fatalf("b's object after a's delete all: %q, %v", got, err)
	}
}

func TestS3UnreachableEndpointFails(t *testing.T) {
	srv := httptest.NewServer(nil)
	url := srv.URL
	srv.Close()
	cfg, err := blob.ParseS3URL("s3://images?endpoint=" + url + "&path_style=true&access_key_id=k&secret_access_key=s")
	if err != nil {
		t.Fatal(err)
	}
	s, err := blob.OpenS3(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(context.Background(), []byte("x")); err == nil {
		t.Fatal("put to a closed endpoint succeeded")
	}
	if _, err := s.Get(context.Background(), blob.NewName()); err == nil || errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("get from a closed endpoint: %v, want a non-not-found error", err)
	}
}

func TestParseS3URL(t *testing.T) {
	cases := []struct {
		in      string
		want    blob.S3Config
		wantErr bool
	}{
		{in: "s3://bucket", want: blob.S3Config{Bucket: "bucket"}},
		{in: "s3://bucket/images/?region=eu-west-1&endpoint=http://127.0.0.1:9000&path_style=true",
			want: blob.S3Config{Bucket: "bucket", Prefix: "images/", Region: "eu-west-1", Endpoint: "http://127.0.0.1:9000", PathStyle: true}},
		{in: "s3://b?access_key_id=k&secret_access_key=s&create_bucket=1",
			want: blob.S3Config{Bucket: "b", AccessKeyID: "k", SecretAccessKey: "s", CreateBucket: true}},
		{in: "s3://", wantErr: true},
		{in: "http://bucket", wantErr: true},
		{in: "s3://b?regoin=x", wantErr: true},
		{in: "s3://b?path_style=maybe", wantErr: true},
		{in: "s3://b?access_key_id=k", wantErr: true},
		{in: "s3://b?endpoint=not a url", wantErr: true},
	}
	for _, c := range cases {
		got, err := blob.ParseS3URL(c.in)
		if (err != nil) != c.wantErr {
			t.Errorf("%s: err = %v, wantErr %v", c.in, err, c.wantErr)
			continue
		}
		if !c.wantErr && got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.in, got, c.want)
		}
	}
}

func TestOpenSpec(t *testing.T) {
	dir := t.TempDir()
	for _, spec := range []string{"", "file"} {
		s, err := blob.Open(context.Background(), spec, dir)
		if err != nil {
			t.Fatalf("%q: %v", spec, err)
		}
		if f, ok := s.(*blob.File); !ok || f.Dir() != filepath.Join(dir, "blobs") {
			t.Fatalf("%q: got %T", spec, s)
		}
		_ = s.Close()
	}
	if s, err := blob.Open(context.Background(), "s3://b?region=us-east-1", dir); err != nil {
		t.Fatal(err)
	} else if _, ok := s.(*blob.S3); !ok {
		t.Fatalf("got %T", s)
	}
	for _, bad := range []string{"gcs://b", "files", "s3://"} {
		if _, err := blob.Open(context.Background(), bad, dir); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
