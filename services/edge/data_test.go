package edge

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cachepool/cachepool/contracts"
	"github.com/nats-io/nats.go"
)

const testMaxImage = 64 << 10

// TestUploadBadInput sends every kind of bad upload and checks the status,
// the envelope, a message naming the problem, and that the store saw nothing.
func TestUploadBadInput(t *testing.T) {
	e := newEnv(t, envOpt{cfg: Config{MaxImageBytes: testMaxImage}})
	img := pngBytes(100)

	type tc struct {
		name    string
		body    func() (string, []byte) // content type, body
		status  int
		message string
	}
	mp := func(key *string, file []byte) func() (string, []byte) {
		return func() (string, []byte) {
			r, ct := multipartBody(key, file, "image/png")
			var b bytes.Buffer
			_, _ = b.ReadFrom(r)
			return ct, b.Bytes()
		}
	}
	cases := []tc{
		{"not multipart", func() (string, []byte) { return "application/json", []byte(`{"key":"a"}`) }, 400, "multipart/form-data"},
		{"no content type", func() (string, []byte) { return "", []byte("key=a") }, 400, "multipart/form-data"},
		{"malformed multipart", func() (string, []byte) {
			return "multipart/form-data; boundary=XYZ", []byte("--XYZ\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nabc\r\n--XY")
		}, 400, "malformed multipart"},
		{"garbage after boundary", func() (string, []byte) {
			return "multipart/form-data; boundary=XYZ", []byte("this is not multipart at all")
		}, 400, "malformed multipart"},
		{"missing key", mp(nil, img), 400, "key: the form field is missing"},
		{"missing file", mp(strp("k1"), nil), 400, "file: the form field is missing"},
		{"empty key", mp(strp(""), img), 400, "key is empty"},
		{"key with a space", mp(strp("a b"), img), 400, "key has a character"},
		{"key with a slash", mp(strp("a/b"), img), 400, "key has a character"},
		{"key with a backslash", mp(strp(`a\b`), img), 400, "key has a character"},
		{"key with ..", mp(strp("a..b"), img), 400, "key has a character"},
		{"key ..", mp(strp(".."), img), 400, "key has a character"},
		{"key with NUL", mp(strp("a\x00b"), img), 400, "key has a character"},
		{"key with a control character", mp(strp("a\x1bb"), img), 400, "key has a character"},
		{"key with a newline", mp(strp("a\nb"), img), 400, "key has a character"},
		{"key of 10000 characters", mp(strp(strings.Repeat("k", 10000)), img), 400, "key is longer than"},
		{"key not UTF-8", mp(strp("a\xffb"), img), 400, "key is not valid UTF-8"},
		{"empty file", mp(strp("k1"), []byte{}), 400, "file is empty"},
		{"file one byte over the limit", mp(strp("k1"), pngBytes(testMaxImage+1)), 413, "larger than the limit"},
		{"body far over the limit", mp(strp("k1"), pngBytes(4*testMaxImage)), 413, "larger than the limit"},
		{"text file", mp(strp("k1"), []byte("hello, this is plain text")), 415, "not an image"},
		{"html file", mp(strp("k1"), []byte("<html><body>hi</body></html>")), 415, "not an image"},
		{"pdf file", mp(strp("k1"), []byte("%PDF-1.4 ...")), 415, "not an image"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ct, body := c.body()
			status, _, b := e.do(http.MethodPost, "/api/upload", bytes.NewReader(body), "Content-Type", ct)
			m := decodeEnvelope(t, status, b)
			if status != c.status {
				t.Fatalf("status %d, want %d: %s", status, c.status, b)
			}
			if msg := errMessage(m); !strings.Contains(msg, c.message) {
				t.Fatalf("message %q does not contain %q", msg, c.message)
			}
		})
	}
	if n := e.store.puts.Load(); n != 0 {
		t.Fatalf("the store received %d puts for bad uploads, want 0", n)
	}
}

// TestUploadAccepted covers good uploads: a unicode key, a file exactly at
// the limit, and sniffing winning over the client's Content-Type.
func TestUploadAccepted(t *testing.T) {
	e := newEnv(t, envOpt{cfg: Config{MaxImageBytes: testMaxImage}})
	for _, c := range []struct {
		key  string
		file []byte
		ct   string // the client's part header
		want string // the content type the store must receive
	}{
		{"ключ-画像-🙂", pngBytes(1000), "image/png", "image/png"},
		{"exact-limit", pngBytes(testMaxImage), "image/png", "image/png"},
		{"lying-client", []byte("GIF89a....."), "text/plain", "image/gif"},
		{"punct-_.:@+=,~", pngBytes(10), "", "image/png"},
	} {
		body, ct := multipartBody(&c.key, c.file, c.ct)
		status, _, b := e.do(http.MethodPost, "/api/upload", body, "Content-Type", ct)
		m := decodeEnvelope(t, status, b)
		if status != 200 {
			t.Fatalf("%q: status %d: %s", c.key, status, b)
		}
		keys, _ := m["key"].([]any)
		if len(keys) != 1 || keys[0] != c.key || len(m) != 2 {
			t.Fatalf("%q: answer %s, want exactly success and key:[%q]", c.key, b, c.key)
		}
		en, found := e.store.get(c.key)
		if !found || !bytes.Equal(en.data, c.file) || en.ct != c.want {
			t.Fatalf("%q: store holds found=%v ct=%q len=%d, want ct %q len %d", c.key, found, en.ct, len(en.data), c.want, len(c.file))
		}
	}
	if n := e.store.puts.Load(); n != 4 {
		t.Fatalf("store puts = %d, want 4", n)
	}
}

// TestKeyPathRules checks key rules on the read routes: 400 naming the
// problem, and neither a node nor the store is asked.
func TestKeyPathRules(t *testing.T) {
	e := newEnv(t, envOpt{})
	for _, p := range []struct{ path, message string }{
		{"/api/key/", "key is empty"},
		{"/api/key", "key is empty"},
		{"/api/image/", "key is empty"},
		{"/api/key/a%2Fb", "key has a character"},
		{"/api/key/a/b", "key has a character"},
		{"/api/image/a%20b", "key has a character"},
		{"/api/key/..", "key has a character"},
		{"/api/image/x..y", "key has a character"},
		{"/api/key/a%00b", "key has a character"},
		{"/api/key/a%09b", "key has a character"},
		{"/api/key/" + strings.Repeat("x", 10000), "key is longer"},
	} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			if strings.HasPrefix(p.path, "/api/image") && method == http.MethodPost {
				continue
			}
			status, _, b := e.do(method, p.path, nil)
			m := decodeEnvelope(t, status, b)
			if status != 400 || !strings.Contains(errMessage(m), p.message) {
				t.Fatalf("%s %s: status %d %s, want 400 with %q", method, p.path, status, b, p.message)
			}
		}
	}
	if g, l := e.nodes.totalGets(), e.store.loads.Load(); g != 0 || l != 0 {
		t.Fatalf("bad keys reached the bus: %d node gets, %d store loads", g, l)
	}
}

// TestMethodsAndRoutes checks 405 and 404 envelopes, with nothing forwarded.
func TestMethodsAndRoutes(t *testing.T) {
	e := newEnv(t, envOpt{})
	for _, c := range []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/api/upload", 405},
		{http.MethodPut, "/api/upload", 405},
		{http.MethodDelete, "/api/key/abc", 405},
		{http.MethodPost, "/api/image/abc", 405},
		{http.MethodPut, "/api/list_keys", 405},
		{http.MethodGet, "/api/delete_all", 405},
		{http.MethodGet, "/api/getNumNodes", 405},
		{http.MethodPost, "/api/manager/poolsize", 405},
		{http.MethodGet, "/api/manager/poolsize/manual", 405},
		{http.MethodPost, "/api/manager/cache/clear", 405},
		{http.MethodGet, "/api/nope", 404},
		{http.MethodGet, "/api/manager/nope", 404},
		{http.MethodPost, "/nope", 404},
		{http.MethodGet, "/api/upload/", 404},
	} {
		status, _, b := e.do(c.method, c.path, strings.NewReader(""))
		decodeEnvelope(t, status, b)
		if status != c.status {
			t.Fatalf("%s %s: status %d, want %d: %s", c.method, c.path, status, c.status, b)
		}
	}
	if e.store.puts.Load()+e.store.loads.Load()+e.store.clears.Load() != 0 || e.nodes.totalGets() != 0 || e.mgr.mutations() != 0 {
		t.Fatal("a 404/405 request reached a service")
	}
}

// ownerOf returns the node owning key in twoNodeTable.
func ownerOf(t *testing.T, key string) contracts.NodeID {
	tbl := twoNodeTable(1)
	o, _, err := tbl.Owner(key)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// TestReadHit: a cached key is answered by its owner in exactly one node
// request, with no store load, through both read routes.
func TestReadHit(t *testing.T) {
	e := newEnv(t, envOpt{})
	key := "hit-ключ"
	img := pngBytes(3000)
	owner := ownerOf(t, key)
	e.nodes.put(owner, key, entry{data: img, ct: "image/png", version: 3})

	status, h, b := e.do(http.MethodGet, "/api/image/"+url.PathEscape(key), nil)
	if status != 200 || !bytes.Equal(b, img) || h.Get("Content-Type") != "image/png" || h.Get("X-Cache") != "hit" {
		t.Fatalf("image: status %d ct %q x-cache %q len %d", status, h.Get("Content-Type"), h.Get("X-Cache"), len(b))
	}
	if g := e.nodes.gets[owner].Load(); g != 1 || e.nodes.totalGets() != 1 || e.store.loads.Load() != 0 {
		t.Fatalf("hit used %d owner gets, %d node gets in all, %d store loads; want 1, 1, 0", g, e.nodes.totalGets(), e.store.loads.Load())
	}

	for _, method := range []string{http.MethodGet, http.MethodPost} {
		status, _, b = e.do(method, "/api/key/"+url.PathEscape(key), nil)
		var got struct {
			Success string   `json:"success"`
			Key     []string `json:"key"`
			Content string   `json:"content"`
		}
		if err := json.Unmarshal(b, &got); err != nil || status != 200 {
			t.Fatalf("%s key: status %d err %v: %s", method, status, err, b)
		}
		raw, err := base64.StdEncoding.DecodeString(got.Content)
		if err != nil || got.Success != "true" || len(got.Key) != 1 || got.Key[0] != key || !bytes.Equal(raw, img) {
			t.Fatalf("%s key: answer %+v (decode err %v)", method, got, err)
		}
	}
	if e.nodes.totalGets() != 3 || e.store.loads.Load() != 0 {
		t.Fatalf("after 3 hits: %d node gets, %d store loads", e.nodes.totalGets(), e.store.loads.Load())
	}
}

// TestReadMiss: an uncached key falls back to the store; an unknown key is
// 404; a dead owner node falls back to the store too.
func TestReadMiss(t *testing.T) {
	e := newEnv(t, envOpt{})
	key := "miss-key"
	img := pngBytes(500)
	body, ct := multipartBody(&key, img, "")
	if status, _, b := e.do(http.MethodPost, "/api/upload", body, "Content-Type", ct); status != 200 {
		t.Fatalf("upload: %d %s", status, b)
	}
	status, h, b := e.do(http.MethodGet, "/api/image/"+key, nil)
	if status != 200 || !bytes.Equal(b, img) || h.Get("X-Cache") != "miss" || h.Get("Content-Type") != "image/png" {
		t.Fatalf("miss: status %d x-cache %q ct %q", status, h.Get("X-Cache"), h.Get("Content-Type"))
	}
	if e.nodes.totalGets() != 1 || e.store.loads.Load() != 1 {
		t.Fatalf("miss: %d node gets, %d store loads; want 1, 1", e.nodes.totalGets(), e.store.loads.Load())
	}

	status, _, b = e.do(http.MethodGet, "/api/key/nobody-stored-this", nil)
	m := decodeEnvelope(t, status, b)
	if status != 404 || !strings.Contains(errMessage(m), "nobody-stored-this") {
		t.Fatalf("unknown key: %d %s", status, b)
	}

	// The owner node goes away: reads still succeed through the store.
	_ = e.nodes.svc.Stop()
	status, _, b = e.do(http.MethodGet, "/api/image/"+key, nil)
	if status != 200 || !bytes.Equal(b, img) {
		t.Fatalf("dead node: status %d", status)
	}
	if e.store.loads.Load() != 3 {
		t.Fatalf("store loads = %d, want 3", e.store.loads.Load())
	}
}

// TestReadWithoutStore: with neither node nor store answering, a read is
// 503 in the envelope (never a bare 500).
func TestReadWithoutStore(t *testing.T) {
	e := newEnv(t, envOpt{noStore: true, cfg: Config{}})
	_ = e.nodes.svc.Stop()
	status, _, b := e.do(http.MethodGet, "/api/image/k", nil)
	m := decodeEnvelope(t, status, b)
	if status != 503 || !strings.Contains(errMessage(m), contracts.StoreLoad) {
		t.Fatalf("status %d %s, want 503 naming %s", status, b, contracts.StoreLoad)
	}
}

// TestFrontEndMisc covers list_keys, delete_all, getNumNodes and getRate.
func TestFrontEndMisc(t *testing.T) {
	e := newEnv(t, envOpt{})
	for _, k := range []string{"a", "b", "c"} {
		body, ct := multipartBody(strp(k), pngBytes(10), "")
		if status, _, b := e.do(http.MethodPost, "/api/upload", body, "Content-Type", ct); status != 200 {
			t.Fatalf("upload %s: %d %s", k, status, b)
		}
	}
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		status, m := e.doJSON(method, "/api/list_keys", "")
		keys, _ := m["keys"].([]any)
		if status != 200 || len(keys) != 3 {
			t.Fatalf("%s list_keys: %d %v", method, status, m)
		}
	}
	status, m := e.doJSON(http.MethodPost, "/api/delete_all", "")
	if status != 200 || m["rows"] != 3.0 || m["objects"] != 3.0 || m["cached_items"] != 7.0 {
		t.Fatalf("delete_all: %d %v", status, m)
	}
	status, m = e.doJSON(http.MethodPost, "/api/list_keys", "")
	if keys, _ := m["keys"].([]any); status != 200 || keys == nil || len(keys) != 0 {
		t.Fatalf("list_keys after delete_all: %d %v (want an empty array)", status, m)
	}
	status, m = e.doJSON(http.MethodPost, "/api/getNumNodes", "")
	if status != 200 || m["numNodes"] != 2.0 {
		t.Fatalf("getNumNodes: %d %v", status, m)
	}

	// No stats service yet: getRate is 503; a bad or missing rate is 400 and not forwarded.
	status, m = e.doJSON(http.MethodPost, "/api/getRate?rate=miss", "")
	if status != 503 {
		t.Fatalf("getRate without stats: %d %v", status, m)
	}
	for _, q := range []string{"", "?rate=", "?rate=speed"} {
		status, m = e.doJSON(http.MethodPost, "/api/getRate"+q, "")
		if status != 400 || !strings.Contains(errMessage(m), "rate") {
			t.Fatalf("getRate%s: %d %v", q, status, m)
		}
	}
	startStats(t, e.fnc, 0.25)
	status, m = e.doJSON(http.MethodPost, "/api/getRate?rate=miss", "")
	if status != 200 || m["rate"] != "miss" || m["value"] != 0.25 {
		t.Fatalf("getRate: %d %v", status, m)
	}
	status, m = e.doJSON(http.MethodPost, "/api/getRate?rate=hit", "")
	if status != 200 || m["rate"] != "hit" || m["value"] != 0.75 {
		t.Fatalf("getRate hit: %d %v", status, m)
	}
}

// TestNumNodesWithoutTable: before any table, getNumNodes is 503.
func TestNumNodesWithoutTable(t *testing.T) {
	e := newEnv(t, envOpt{noTable: true})
	status, m := e.doJSON(http.MethodPost, "/api/getNumNodes", "")
	if status != 503 {
		t.Fatalf("getNumNodes without table: %d %v", status, m)
	}
	// The table arrives later: the watch picks it up.
	writeTable(t, e.fnc, twoNodeTable(4))
	waitFor(t, func() error {
		status, m := e.doJSON(http.MethodPost, "/api/getNumNodes", "")
		if status != 200 || m["numNodes"] != 2.0 {
			return fmt.Errorf("getNumNodes: %d %v", status, m)
		}
		return nil
	})
}

// TestReadSilentNodeFallsBackAfterNodeTimeout: an owner node that receives
// the request but never answers (a paused process) costs the read
// NodeTimeout, not the whole request timeout; the store then serves it.
func TestReadSilentNodeFallsBackAfterNodeTimeout(t *testing.T) {
	e := newEnv(t, envOpt{cfg: Config{NodeTimeout: 200 * time.Millisecond}})
	key := "silent-owner"
	img := pngBytes(300)
	body, ct := multipartBody(&key, img, "")
	if status, _, b := e.do(http.MethodPost, "/api/upload", body, "Content-Type", ct); status != 200 {
		t.Fatalf("upload: %d %s", status, b)
	}
	// Both nodes stop answering but keep their subscriptions.
	_ = e.nodes.svc.Stop()
	var asked atomic.Int64
	for _, id := range []contracts.NodeID{"n1", "n2"} {
		sub, err := e.fnc.Subscribe(contracts.NodeGet(id), func(*nats.Msg) { asked.Add(1) })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	if err := e.fnc.Flush(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	status, h, b := e.do(http.MethodGet, "/api/image/"+key, nil)
	took := time.Since(start)
	if status != 200 || !bytes.Equal(b, img) || h.Get("X-Cache") != "miss" {
		t.Fatalf("silent owner: status %d x-cache %q", status, h.Get("X-Cache"))
	}
	if asked.Load() != 1 {
		t.Fatalf("the owner was asked %d times, want 1", asked.Load())
	}
	// The old bound was RequestTimeout/2 = 5 s; the node timeout is 200 ms.
	if took > 3*time.Second {
		t.Fatalf("the read took %v with a 200ms node timeout", took)
	}
	if d := (Config{}).withDefaults(); d.NodeTimeout != DefaultNodeTimeout {
		t.Fatalf("default node timeout %v, want %v", d.NodeTimeout, DefaultNodeTimeout)
	}
	if d := (Config{RequestTimeout: time.Second}).withDefaults(); d.NodeTimeout != 500*time.Millisecond {
		t.Fatalf("node timeout %v with a 1s request timeout, want 500ms", d.NodeTimeout)
	}
}
