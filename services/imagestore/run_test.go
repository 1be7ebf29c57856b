package imagestore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"io/fs"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/bus/bustest"
	"github.com/cachepool/cachepool/contracts"
	"github.com/cachepool/cachepool/services/imagestore/blob"
	"github.com/cachepool/cachepool/services/imagestore/meta"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/nats-io/nats.go/micro"
)

// startRun runs the public Run in a goroutine and returns, once the store
// answers, a stop function that cancels Run and returns its result (at
// cleanup too, if the test did not stop it).
func startRun(t *testing.T, e *env, cfg Config) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	nc := bustest.Connect(t, e.srv)
	go func() { done <- Run(ctx, nc, cfg, testLogger()) }()
	var result error
	stopped := false
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case result = <-done:
			case <-time.After(30 * time.Second):
				result = errors.New("Run did not return within 30s of cancel")
			}
		}
		return result
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	bustest.Eventually(t, 15*time.Second, func() error {
		select {
		case err := <-done:
			t.Fatalf("Run returned early: %v", err)
		default:
		}
		_, err := bus.Request[contracts.ListKeysReply](context.Background(), e.nc, contracts.StoreList, nil)
		return err
	})
	return stop
}

func TestRunRegistersTheServiceAndReturnsNilOnCancel(t *testing.T) {
	e := newEnv(t, "n1")
	stop := startRun(t, e, Config{DataDir: t.TempDir()})

	ctx, cancel := reqCtx()
	defer cancel()
	info, err := bus.Request[micro.Info](ctx, e.nc, "$SRV.INFO."+contracts.ServiceStore, nil)
	if err != nil {
		t.Fatal(err)
	}
	var subjects []string
	for _, ep := range info.Endpoints {
		subjects = append(subjects, ep.Subject)
		if ep.QueueGroup != contracts.QueueStore {
			t.Errorf("endpoint %s in queue group %q, want %q", ep.Name, ep.QueueGroup, contracts.QueueStore)
		}
	}
	slices.Sort(subjects)
	want := []string{contracts.StoreClearAll, contracts.StoreClearCache, contracts.StoreList, contracts.StoreLoad, contracts.StorePut}
	slices.Sort(want)
	if info.Name != contracts.ServiceStore || !slices.Equal(subjects, want) {
		t.Fatalf("service %s with endpoints %v, want %v", info.Name, subjects, want)
	}
	rep := e.mustPut("k", []byte("v"))
	if got, err := e.load("k"); err != nil || got.version != rep.Version {
		t.Fatalf("load = %+v, %v", got, err)
	}

	if err := stop(); err != nil {
		t.Fatalf("Run returned %v after cancel, want nil", err)
	}
	if _, err := e.load("k"); codeOf(err) != contracts.CodeUnavailable {
		t.Fatalf("load after Run returned: %v, want 503 (no responders)", err)
	}
}

func TestRunRefusesBadConfigAndUnreachableDatabase(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := Run(ctx, e.nc, Config{}, nil); err == nil || !strings.Contains(err.Error(), "data dir") {
		t.Fatalf("Run without a data dir: %v", err)
	}
	cfg := Config{DataDir: t.TempDir(), Database: "postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=2", Timeout: 3 * time.Second}
	if err := Run(ctx, e.nc, cfg, nil); err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("Run with an unreachable database: %v", err)
	}
}

// TestRunOnS3AndPostgres runs the production configuration: an S3 bucket
// over HTTP and PostgreSQL (in a schema of its own).
func TestRunOnS3AndPostgres(t *testing.T) {
	dsn := postgresSchema(t)
	s3srv := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
	t.Cleanup(s3srv.Close)
	bucket := "s3://images/cachepool?region=us-east-1&path_style=true&access_key_id=k&secret_access_key=s&create_bucket=true&endpoint=" + s3srv.URL
	e := newEnv(t, "n1", "n2")
	startRun(t, e, Config{Blob: bucket, Database: dsn})

	for _, k := range []string{"b", "a", "c"} {
		e.mustPut(k, []byte("img-"+k))
	}
	e.mustPut("a", []byte("img-a2"))
	e.owner("a").drop()
	if got, err := e.load("a"); err != nil || string(got.data) != "img-a2" || got.version != 2 {
		t.Fatalf("load = %q v%d, %v", got.data, got.version, err)
	}
	ctx, cancel := reqCtx()
	defer cancel()
	list, err := bus.Request[contracts.ListKeysReply](ctx, e.nc, contracts.StoreList, nil)
	if err != nil || !slices.Equal(list.Keys, []string{"a", "b", "c"}) {
		t.Fatalf("list = %v, %v", list.Keys, err)
	}
	cached := int64(0)
	for _, n := range e.nodes {
		cached += int64(n.len())
	}
	all, err := bus.Request[contracts.ClearAllReply](ctx, e.nc, contracts.StoreClearAll, nil)
	if err != nil || all.Rows != 3 || all.Objects != 3 || all.CachedItems != cached || cached == 0 {
		t.Fatalf("clear_all = %+v, %v", all, err)
	}
}

// postgresSchema returns a DSN whose search_path is a fresh schema, dropped
// after the test. It skips only when PostgreSQL is unreachable and CI is unset.
func postgresSchema(t *testing.T) string {
	t.Helper()
	base := os.Getenv("CACHEPOOL_TEST_POSTGRES")
	if base == "" {
		base = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	admin, err := sql.Open("pgx", base)
	if err == nil {
		err = admin.Ping()
	}
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("PostgreSQL unreachable at %s (set CI to make this a failure): %v", base, err)
		}
		t.Fatalf("PostgreSQL unreachable at %s: %v", base, err)
	}
	t.Cleanup(func() { _ = admin.Close() })
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "imagestore_run_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec("DROP SCHEMA " + schema + " CASCADE"); err != nil {
			t.Errorf("drop schema: %v", err)
		}
	})
	return base + "&search_path=" + schema
}

func TestUnavailableDependenciesAnswer503(t *testing.T) {
	t.Run("blob store", func(t *testing.T) {
		dead := httptest.NewServer(nil)
		dead.Close()
		cfg, err := blob.ParseS3URL("s3://images?region=us-east-1&path_style=true&access_key_id=k&secret_access_key=s&endpoint=" + dead.URL)
		if err != nil {
			t.Fatal(err)
		}
		s3, err := blob.OpenS3(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		db, err := meta.Open(context.Background(), "sqlite", dir)
		if err != nil {
			t.Fatal(err)
		}
		e := newEnv(t, "n1")
		e.serve(&instance{blobs: &countingBlobs{Store: s3}, meta: db, dir: dir}, Config{Timeout: 3 * time.Second})
		_, err = e.put("k", "image/png", []byte("x"))
		if codeOf(err) != contracts.CodeUnavailable || !strings.Contains(err.Error(), "blob store unavailable") {
			t.Fatalf("put with S3 down: %v, want 503 naming the blob store", err)
		}
		if keys, _ := db.ListKeys(context.Background()); len(keys) != 0 {
			t.Fatalf("a row was written although the blob failed: %v", keys)
		}
	})
	t.Run("database", func(t *testing.T) {
		e := newEnv(t, "n1")
		inst := e.start(Config{Timeout: 3 * time.Second}, t.TempDir())
		e.mustPut("k", []byte("x"))
		_ = inst.meta.Close() // the database goes away under the running service
		_, err := e.put("k", "image/png", []byte("y"))
		if codeOf(err) != contracts.CodeUnavailable || !strings.Contains(err.Error(), "metadata database unavailable") {
			t.Fatalf("put with the database down: %v", err)
		}
		if names, _ := inst.blobs.List(context.Background()); len(names) != 1 {
			t.Fatalf("%d objects; the blob of the failed put must be deleted", len(names))
		}
		e.owner("k").drop()
		if _, err := e.load("k"); codeOf(err) != contracts.CodeUnavailable {
			t.Fatalf("load with the database down: %v", err)
		}
		ctx, cancel := reqCtx()
		defer cancel()
		if _, err := bus.Request[contracts.ListKeysReply](ctx, e.nc, contracts.StoreList, nil); codeOf(err) != contracts.CodeUnavailable {
			t.Fatalf("list with the database down: %v", err)
		}
	})
}

// Keys never become paths: whatever the key, the data dir holds only the
// database and files named by the store, and nothing outside it changes.
func TestKeysNeverTouchTheFilesystem(t *testing.T) {
	root := t.TempDir()
	dataDir := filepath.Join(root, "data")
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o750); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(root, "etc", "passwd")
	if err := os.WriteFile(victim, []byte("root:x:0:0"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, "n1")
	e.start(Config{}, dataDir)
	for _, k := range []string{"../../etc/passwd", "../etc/passwd", "/etc/passwd", `..\..\etc\passwd`} {
		if _, err := e.put(k, "image/png", []byte("pwned")); codeOf(err) != contracts.CodeBadRequest {
			t.Errorf("put %q: %v, want 400", k, err)
		}
	}
	// Path-looking keys that are valid are stored under generated names.
	odd := []string{"etc:passwd", "~root", "%2e%2e%2fetc%2fpasswd", "C:", "passwd.", ".hidden", "名前.png"}
	for _, k := range odd {
		e.mustPut(k, []byte("img "+k))
	}
	for _, k := range odd {
		if got, err := e.load(k); err != nil || string(got.data) != "img "+k {
			t.Fatalf("load %q = %q, %v", k, got.data, err)
		}
	}
	generated := regexp.MustCompile(`^[0-9a-f]{32}$`)
	var objects int
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		switch {
		case rel == filepath.Join("etc", "passwd"):
		case strings.HasPrefix(rel, filepath.Join("data", meta.SQLiteFile)):
		case filepath.Dir(rel) == filepath.Join("data", "blobs") && generated.MatchString(d.Name()):
			objects++
		default:
			t.Errorf("unexpected file %s", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if objects != len(odd) {
		t.Fatalf("%d objects, want %d", objects, len(odd))
	}
	if b, _ := os.ReadFile(victim); string(b) != "root:x:0:0" {
		t.Fatalf("the file outside the data dir changed: %q", b)
	}
}

// panickyBlobs panics on reads and writes, as a buggy adapter would.
type panickyBlobs struct{ blob.Store }

func (panickyBlobs) Get(context.Context, string) ([]byte, error) { panic("test: get panics") }
func (panickyBlobs) Put(context.Context, []byte) (string, error) { panic("test: put panics") }

func TestAPanickingAdapterAnswers500AndTheServiceLivesOn(t *testing.T) {
	dir := t.TempDir()
	fs, err := blob.OpenFile(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	db, err := meta.Open(context.Background(), "sqlite", dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Upsert(context.Background(), "k", blob.NewName(), "image/png", 1); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, "n1")
	e.serve(&instance{blobs: &countingBlobs{Store: panickyBlobs{fs}}, meta: db, dir: dir}, Config{})
	for range 2 {
		if _, err := e.load("k"); codeOf(err) != contracts.CodeInternal {
			t.Fatalf("load through a panicking adapter: %v, want 500", err)
		}
		if _, err := e.put("k", "image/png", []byte("x")); codeOf(err) != contracts.CodeInternal {
			t.Fatalf("put through a panicking adapter: %v, want 500", err)
		}
	}
	ctx, cancel := reqCtx()
	defer cancel()
	if list, err := bus.Request[contracts.ListKeysReply](ctx, e.nc, contracts.StoreList, nil); err != nil || len(list.Keys) != 1 {
		t.Fatalf("list after the panics = %v, %v", list.Keys, err)
	}
}
