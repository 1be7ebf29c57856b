package imagestore

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cachepool/cachepool/bus"
	"github.com/cachepool/cachepool/bus/bustest"
	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go"
)

func TestPutFollowsTheWritePathOrder(t *testing.T) {
	e := newEnv(t, "n1", "n2")
	inst := e.start(Config{}, t.TempDir())
	const key = "cat.png"
	owner := e.owner(key)

	// At the moment the owner node receives version v, the blob and the row
	// already hold it, and the replaced object is not deleted yet.
	type observed struct {
		version      uint64
		rowVersion   int64
		blobMatches  bool
		objectsCount int
	}
	var mu sync.Mutex
	var seen []observed
	var want [][]byte
	owner.setOnPut(func(k string, v uint64) {
		ctx := context.Background()
		row, err := inst.meta.Get(ctx, k)
		o := observed{version: v, rowVersion: row.Version}
		if err == nil {
			b, err := inst.blobs.Store.Get(ctx, row.Object)
			mu.Lock()
			o.blobMatches = err == nil && bytes.Equal(b, want[v-1])
			mu.Unlock()
		}
		names, _ := inst.blobs.List(ctx)
		o.objectsCount = len(names)
		mu.Lock()
		seen = append(seen, o)
		mu.Unlock()
	})

	for v := 1; v <= 3; v++ {
		data := fmt.Appendf(nil, "image version %d", v)
		mu.Lock()
		want = append(want, data)
		mu.Unlock()
		rep := e.mustPut(key, data)
		if rep.Key != key || rep.Version != uint64(v) || rep.Bytes != int64(len(data)) {
			t.Fatalf("put %d: reply %+v", v, rep)
		}
		// After the answer: the node holds this version, the old object is gone.
		got, ok := owner.entry(key)
		if !ok || got.version != uint64(v) || !bytes.Equal(got.data, data) || got.contentType != "image/png" {
			t.Fatalf("owner after put %d: %+v, %v", v, got, ok)
		}
		if names, _ := inst.blobs.List(context.Background()); len(names) != 1 {
			t.Fatalf("after put %d: %d objects, want 1 (the replaced one deleted)", v, len(names))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 3 {
		t.Fatalf("owner saw %d puts, want 3", len(seen))
	}
	for i, o := range seen {
		wantObjects := 2
		if i == 0 {
			wantObjects = 1
		}
		if o.version != uint64(i+1) || o.rowVersion != int64(o.version) || !o.blobMatches || o.objectsCount != wantObjects {
			t.Errorf("node put %d observed %+v; want the row and blob at that version and %d objects", i+1, o, wantObjects)
		}
	}
	if n := len(e.other(key).putsOf(key)); n != 0 {
		t.Errorf("a node that does not own the key got %d puts", n)
	}
}

func TestPutWhilePartitionMovesInvalidatesPreviousOwner(t *testing.T) {
	e := newEnv(t, "n1", "n2")
	inst := e.start(Config{}, t.TempDir())
	const key = "moving.png"
	oldOwner := e.owner(key)
	e.mustPut(key, []byte("v1"))
	if got, _ := oldOwner.entry(key); got.version != 1 {
		t.Fatalf("old owner holds %+v", got)
	}

	// Epoch 2: the key's partition moves from oldOwner to the other node.
	newOwner := e.other(key)
	moved := e.table
	moved.Epoch = 2
	moved.Owners = slices.Clone(e.table.Owners)
	moved.Previous = make([]contracts.NodeID, testPartitions)
	p := contracts.Partition(key, testPartitions)
	moved.Owners[p], moved.Previous[p] = newOwner.id, oldOwner.id
	e.setTable(moved)
	e.waitTable(inst, 2)

	rep := e.mustPut(key, []byte("v2"))
	if got, ok := newOwner.entry(key); !ok || got.version != rep.Version || string(got.data) != "v2" {
		t.Fatalf("new owner holds %+v, %v; want version %d", got, ok, rep.Version)
	}
	if got, ok := oldOwner.entry(key); ok {
		t.Fatalf("previous owner still holds %+v after the put", got)
	}

	// A load during the move takes the previous owner's copy only at the
	// row's version.
	newOwner.drop()
	oldOwner.seed(key, rep.Version, []byte("v2 from the previous owner"))
	before := inst.blobs.gets.Load()
	got, err := e.load(key)
	if err != nil || string(got.data) != "v2 from the previous owner" || got.version != rep.Version {
		t.Fatalf("load = %q v%d, %v", got.data, got.version, err)
	}
	if n := inst.blobs.gets.Load() - before; n != 0 {
		t.Fatalf("%d blob reads; the previous owner had the current version", n)
	}
	if e, ok := newOwner.entry(key); !ok || e.version != rep.Version {
		t.Fatalf("new owner not filled: %+v", e)
	}

	newOwner.drop()
	oldOwner.seed(key, rep.Version-1, []byte("stale"))
	got, err = e.load(key)
	if err != nil || string(got.data) != "v2" || got.version != rep.Version {
		t.Fatalf("load with a stale previous copy = %q v%d, %v", got.data, got.version, err)
	}
	if n := inst.blobs.gets.Load() - before; n != 1 {
		t.Fatalf("%d blob reads, want 1", n)
	}
}

func TestLoadMissReadsTheStoreAndFillsTheOwner(t *testing.T) {
	e := newEnv(t, "n1", "n2")
	inst := e.start(Config{}, t.TempDir())
	const key = "dog.jpg"
	rep, err := e.put(key, "image/jpeg", []byte("woof"))
	if err != nil {
		t.Fatal(err)
	}
	owner := e.owner(key)
	owner.drop()
	got, err := e.load(key)
	if err != nil || string(got.data) != "woof" || got.version != rep.Version || got.contentType != "image/jpeg" {
		t.Fatalf("load = %+v, %v", got, err)
	}
	if inst.blobs.gets.Load() != 1 {
		t.Fatalf("blob reads = %d, want 1", inst.blobs.gets.Load())
	}
	if e, ok := owner.entry(key); !ok || e.version != rep.Version || string(e.data) != "woof" || e.contentType != "image/jpeg" {
		t.Fatalf("owner not filled: %+v, %v", e, ok)
	}
	if _, err := e.load("nobody.png"); codeOf(err) != contracts.CodeNotFound {
		t.Fatalf("unknown key: %v, want 404", err)
	}
	if _, err := e.load("../x"); codeOf(err) != contracts.CodeBadRequest {
		t.Fatalf("bad key: %v, want 400", err)
	}
}

func TestPutWithoutTableStillStores(t *testing.T) {
	e := newEnv(t) // no nodes, no table yet
	e.start(Config{}, t.TempDir())
	rep := e.mustPut("k", []byte("bytes"))
	got, err := e.load("k")
	if err != nil || string(got.data) != "bytes" || got.version != rep.Version {
		t.Fatalf("load = %+v, %v", got, err)
	}
}

func TestConcurrentLoadsOfOneKeyReadTheStoreOnce(t *testing.T) {
	e := newEnv(t, "n1", "n2")
	inst := e.start(Config{}, t.TempDir())
	const key, n = "hot.png", 1000
	data := bytes.Repeat([]byte("hot"), 1000)
	rep := e.mustPut(key, data)
	owner := e.owner(key)
	owner.drop()
	putsBefore := len(owner.putsOf(key))

	gate := inst.blobs.hold(false)
	type result struct {
		got loaded
		err error
	}
	results := make(chan result, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			got, err := e.load(key)
			results <- result{got, err}
		})
	}
	// Release the one read only when all n loads wait on the flight.
	bustest.Eventually(t, 20*time.Second, func() error {
		if w := inst.s.loadsWaiting.Load(); w != n {
			return fmt.Errorf("%d loads waiting", w)
		}
		return nil
	})
	inst.blobs.open(gate)
	wg.Wait()
	close(results)
	for r := range results {
		if r.err != nil || r.got.version != rep.Version || !bytes.Equal(r.got.data, data) {
			t.Fatalf("a load got v%d (%d bytes), %v", r.got.version, len(r.got.data), r.err)
		}
	}
	if g := inst.blobs.gets.Load(); g != 1 {
		t.Fatalf("%d blob reads for %d concurrent loads, want 1", g, n)
	}
	if fills := len(owner.putsOf(key)) - putsBefore; fills != 1 {
		t.Fatalf("%d node fills, want 1", fills)
	}
}

func TestConcurrentUploadsOfOneKeyEndConsistent(t *testing.T) {
	e := newEnv(t, "n1", "n2")
	dir := t.TempDir()
	a := e.start(Config{}, dir)
	e.start(Config{}, dir) // a second instance in the queue group, same database and blobs
	const key, n = "contended.png", 40
	conns := []*nats.Conn{bustest.Connect(t, e.srv), bustest.Connect(t, e.srv)}

	type result struct {
		data []byte
		rep  contracts.StorePutReply
		err  error
	}
	results := make(chan result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			data := bytes.Repeat(fmt.Appendf(nil, "upload-%02d;", i), 100+i)
			rep, err := putOn(conns[i%2], key, "image/png", data)
			results <- result{data, rep, err}
		})
	}
	wg.Wait()
	close(results)
	byVersion := map[uint64][]byte{}
	for r := range results {
		if r.err != nil {
			t.Fatal(r.err)
		}
		if _, dup := byVersion[r.rep.Version]; dup {
			t.Fatalf("version %d answered twice", r.rep.Version)
		}
		byVersion[r.rep.Version] = r.data
	}
	last := byVersion[n]
	if len(byVersion) != n || last == nil {
		t.Fatalf("versions answered: %d distinct, last present %v; want 1..%d", len(byVersion), last != nil, n)
	}
	ctx := context.Background()
	row, err := a.meta.Get(ctx, key)
	if err != nil || row.Version != n || row.Size != int64(len(last)) {
		t.Fatalf("row = %+v, %v", row, err)
	}
	if b, err := a.blobs.Store.Get(ctx, row.Object); err != nil || !bytes.Equal(b, last) {
		t.Fatalf("the row's object is not the last upload whole (%d bytes, %v)", len(b), err)
	}
	if names, _ := a.blobs.List(ctx); len(names) != 1 {
		t.Fatalf("%d objects left, want 1 (every replaced object deleted)", len(names))
	}
	if got, ok := e.owner(key).entry(key); !ok || got.version != n || !bytes.Equal(got.data, last) {
		t.Fatalf("owner node holds v%d (%d bytes), want v%d whole", got.version, len(got.data), n)
	}
	if got, err := e.load(key); err != nil || got.version != n || !bytes.Equal(got.data, last) {
		t.Fatalf("load = v%d, %v", got.version, err)
	}
}

// A load that read version 1 while an upload of version 2 ran must not put
// version 1 into the node after the upload answered.
func TestLoadRacingUploadNeverRestoresTheOlderImage(t *testing.T) {
	for _, afterRead := range []bool{true, false} {
		name := map[bool]string{true: "bytes read before the upload", false: "object replaced before the read"}[afterRead]
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, "n1", "n2")
			inst := e.start(Config{}, t.TempDir())
			const key = "race.png"
			e.mustPut(key, []byte("old"))
			owner := e.owner(key)
			owner.drop()

			gate := inst.blobs.hold(afterRead)
			loadDone := make(chan struct {
				got loaded
				err error
			}, 1)
			go func() {
				got, err := e.load(key)
				loadDone <- struct {
					got loaded
					err error
				}{got, err}
			}()
			select {
			case <-gate.reached:
			case <-time.After(10 * time.Second):
				t.Fatal("the load never reached the blob read")
			}
			rep := e.mustPut(key, []byte("new")) // answers while the load is held
			// A load that starts after the upload answered must not join
			// the held flight, which began before.
			lateDone := make(chan struct {
				got loaded
				err error
			}, 1)
			go func() {
				got, err := e.load(key)
				lateDone <- struct {
					got loaded
					err error
				}{got, err}
			}()
			bustest.Eventually(t, 10*time.Second, func() error {
				if w := inst.s.loadsWaiting.Load(); w != 2 {
					return fmt.Errorf("%d loads waiting, want 2", w)
				}
				return nil
			})
			inst.blobs.open(gate)
			res := <-loadDone
			if res.err != nil {
				t.Fatal(res.err)
			}
			if late := <-lateDone; late.err != nil || late.got.version != rep.Version || string(late.got.data) != "new" {
				t.Fatalf("a load started after the upload answered got v%d %q, %v; want v%d", late.got.version, late.got.data, late.err, rep.Version)
			}
			if !afterRead && (res.got.version != rep.Version || string(res.got.data) != "new") {
				t.Fatalf("a load whose object vanished got v%d %q, want the new version after a retry", res.got.version, res.got.data)
			}
			if afterRead && string(res.got.data) != map[uint64]string{1: "old", 2: "new"}[res.got.version] {
				t.Fatalf("load answered v%d with %q: bytes and version disagree", res.got.version, res.got.data)
			}
			if got, ok := owner.entry(key); !ok || got.version != rep.Version || string(got.data) != "new" {
				t.Fatalf("owner holds v%d %q, want v%d new", got.version, got.data, rep.Version)
			}
			puts := owner.putsOf(key)
			i := slices.IndexFunc(puts, func(p putRecord) bool { return p.version == rep.Version })
			for _, p := range puts[i+1:] {
				if p.version < rep.Version {
					t.Fatalf("node received v%d after v%d: %+v", p.version, rep.Version, puts)
				}
			}
			if got, err := e.load(key); err != nil || got.version != rep.Version {
				t.Fatalf("a load after the upload got v%d, %v", got.version, err)
			}
		})
	}
}

func TestNodePutFailureInvalidatesAndStillSucceeds(t *testing.T) {
	e := newEnv(t, "n1", "n2")
	e.start(Config{}, t.TempDir())
	const key = "flaky.png"
	owner := e.owner(key)
	e.mustPut(key, []byte("v1"))
	owner.setFailPuts(true)
	rep, err := e.put(key, "image/png", []byte("v2"))
	if err != nil || rep.Version != 2 {
		t.Fatalf("put with a failing node = %+v, %v; want success at version 2", rep, err)
	}
	if got, ok := owner.entry(key); ok {
		t.Fatalf("owner kept v%d after its put failed; want it invalidated", got.version)
	}
	owner.setFailPuts(false)
	if got, err := e.load(key); err != nil || got.version != 2 || string(got.data) != "v2" {
		t.Fatalf("load = %+v, %v", got, err)
	}
}

func TestClearAllAndClearCacheReportCounts(t *testing.T) {
	e := newEnv(t, "n1", "n2")
	inst := e.start(Config{}, t.TempDir())
	keys := []string{"a", "b", "c", "d", "e"}
	for _, k := range keys {
		e.mustPut(k, []byte("img-"+k))
	}
	cached := 0
	for _, n := range e.nodes {
		cached += n.len()
	}
	if cached != len(keys) {
		t.Fatalf("%d cached items, want %d", cached, len(keys))
	}
	ctx, cancel := reqCtx()
	defer cancel()
	cc, err := bus.Request[contracts.ClearReply](ctx, e.nc, contracts.StoreClearCache, nil)
	if err != nil || cc.Items != int64(len(keys)) || cc.Nodes != 2 || cc.Bytes != int64(5*len("img-a")) {
		t.Fatalf("clear_cache = %+v, %v", cc, err)
	}
	list, err := bus.Request[contracts.ListKeysReply](ctx, e.nc, contracts.StoreList, nil)
	if err != nil || !slices.Equal(list.Keys, keys) {
		t.Fatalf("list after clear_cache = %v, %v", list.Keys, err)
	}
	if _, err := e.load("a"); err != nil { // refills one node
		t.Fatal(err)
	}

	all, err := bus.Request[contracts.ClearAllReply](ctx, e.nc, contracts.StoreClearAll, nil)
	if err != nil || all != (contracts.ClearAllReply{Rows: 5, Objects: 5, CachedItems: 1}) {
		t.Fatalf("clear_all = %+v, %v", all, err)
	}
	list, err = bus.Request[contracts.ListKeysReply](ctx, e.nc, contracts.StoreList, nil)
	if err != nil || list.Keys == nil || len(list.Keys) != 0 {
		t.Fatalf("list after clear_all = %#v, %v", list.Keys, err)
	}
	if names, _ := inst.blobs.List(ctx); len(names) != 0 {
		t.Fatalf("%d objects after clear_all", len(names))
	}
	if _, err := e.load("a"); codeOf(err) != contracts.CodeNotFound {
		t.Fatalf("load after clear_all: %v, want 404", err)
	}
	if rep := e.mustPut("a", []byte("again")); rep.Version != 1 {
		t.Fatalf("version after clear_all = %d, want 1", rep.Version)
	}
	if _, err := bus.Request[contracts.ClearReply](ctx, e.nc, contracts.StoreClearCache, map[string]int{"x": 1}); codeOf(err) != contracts.CodeBadRequest {
		t.Fatalf("clear_cache with an unknown field: %v, want 400", err)
	}
}

func TestClearCacheNamesANodeThatDoesNotAnswer(t *testing.T) {
	e := newEnv(t, "n1", "n2")
	inst := e.start(Config{NodeTimeout: 500 * time.Millisecond}, t.TempDir())
	ghost := roundRobin(2, []contracts.NodeID{"n1", "n2", "ghost"})
	e.setTable(ghost)
	e.waitTable(inst, 2)
	ctx, cancel := reqCtx()
	defer cancel()
	_, err := bus.Request[contracts.ClearReply](ctx, e.nc, contracts.StoreClearCache, nil)
	if codeOf(err) != contracts.CodeUnavailable || !strings.Contains(err.Error(), "ghost") || !strings.Contains(err.Error(), "on 2 nodes") {
		t.Fatalf("clear_cache with a dead node: %v; want 503 naming it", err)
	}
}

func TestBadInputIsRefusedAndChangesNothing(t *testing.T) {
	e := newEnv(t, "n1", "n2")
	inst := e.start(Config{MaxImageBytes: 1024}, t.TempDir())
	cases := []struct {
		name, key, ct string
		data          []byte
		code          int
	}{
		{"empty key", "", "image/png", []byte("x"), 400},
		{"traversal key", "../../etc/passwd", "image/png", []byte("x"), 400},
		{"dot dot", "..", "image/png", []byte("x"), 400},
		{"slash", "a/b", "image/png", []byte("x"), 400},
		{"space", "a b", "image/png", []byte("x"), 400},
		{"control character", "a\x01b", "image/png", []byte("x"), 400},
		{"10000 characters", strings.Repeat("k", 10000), "image/png", []byte("x"), 400},
		{"invalid utf-8", "\xff\xfe", "image/png", []byte("x"), 400},
		{"oversized", "big.png", "image/png", make([]byte, 1025), 413},
		{"empty image", "empty.png", "image/png", nil, 400},
		{"bad content type", "ct.png", "image/\x7f", []byte("x"), 400},
		{"malformed content type", "ct.png", "image/png; =", []byte("x"), 400},
	}
	for _, c := range cases {
		_, err := e.put(c.key, c.ct, c.data)
		if codeOf(err) != c.code {
			t.Errorf("%s: err = %v, want %d", c.name, err, c.code)
		}
	}
	if rep, err := e.put("edge.png", "", make([]byte, 1024)); err != nil || rep.Version != 1 {
		t.Fatalf("an image of exactly the limit: %+v, %v", rep, err)
	}
	ctx := context.Background()
	if keys, _ := inst.meta.ListKeys(ctx); !slices.Equal(keys, []string{"edge.png"}) {
		t.Fatalf("keys after bad puts = %v", keys)
	}
	if names, _ := inst.blobs.List(ctx); len(names) != 1 {
		t.Fatalf("%d objects after bad puts, want 1", len(names))
	}
	if got, err := e.load("edge.png"); err != nil || got.contentType != "application/octet-stream" {
		t.Fatalf("sniffed content type = %q, %v", got.contentType, err)
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name    string
		cfg     Config
		wantErr []string
	}{
		{"defaults with a data dir", Config{DataDir: "/tmp/x"}, nil},
		{"s3 and postgres need no data dir", Config{Blob: "s3://b?region=us-east-1", Database: "postgres://u@h/db"}, nil},
		{"file without data dir", Config{Database: "postgres://h/db"}, []string{"file blob store"}},
		{"sqlite without data dir", Config{Blob: "s3://b"}, []string{"sqlite"}},
		{"everything wrong at once", Config{Blob: "gcs://b", Database: "mysql://x", MaxImageBytes: -1, Timeout: -time.Second, MaxInFlight: -1},
			[]string{"blob store must be", "database must be", "max image bytes", "timeout must not be negative", "max in flight"}},
		{"bad s3 url", Config{DataDir: "d", Blob: "s3://b?nope=1"}, []string{"unknown parameter"}},
		{"too large images", Config{DataDir: "d", MaxImageBytes: MaxImageBytesLimit + 1}, []string{"max image bytes"}},
	}
	for _, c := range cases {
		err := c.cfg.Validate()
		if (err != nil) != (len(c.wantErr) > 0) {
			t.Errorf("%s: err = %v", c.name, err)
			continue
		}
		for _, w := range c.wantErr {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not mention %q", c.name, err, w)
			}
		}
	}
}
