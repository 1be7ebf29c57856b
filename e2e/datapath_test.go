package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// TestUpStoresReadsRestartsAndReadsAgain is the whole-system walk-through:
// up on random ports in a temp dir, upload, read every way, stop, start
// again on the same data dir, and read every image again.
func TestUpStoresReadsRestartsAndReadsAgain(t *testing.T) {
	cfg := testConfig(t)
	cfg.Nodes = 2
	p := startPool(t, cfg)

	images := map[string][]byte{}
	for i, key := range []string{"cat", "dog.png", "猫", "a:b@c+d=e"} {
		images[key] = pngImage(i+1, 8)
		code, env := p.upload(t, key, images[key])
		if code != http.StatusOK || env.Success != "true" || len(env.Key) != 1 || env.Key[0] != key {
			t.Fatalf("upload %q: %d %+v", key, code, env)
		}
	}
	check := func(p *pool) {
		t.Helper()
		for key, want := range images {
			code, env, _ := p.do(t, http.MethodGet, "/api/key/"+url.PathEscape(key), nil, "")
			if code != http.StatusOK || len(env.Key) != 1 || env.Key[0] != key {
				t.Fatalf("GET /api/key/%s: %d %+v", key, code, env)
			}
			var content string
			if err := json.Unmarshal(env.Content, &content); err != nil {
				t.Fatalf("GET /api/key/%s: content is not a string: %v", key, err)
			}
			got, err := base64.StdEncoding.DecodeString(content)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("GET /api/key/%s: content differs (%v)", key, err)
			}
			code, raw, err := p.image(url.PathEscape(key))
			if err != nil || code != http.StatusOK || !bytes.Equal(raw, want) {
				t.Fatalf("GET /api/image/%s: %d, %d bytes, %v", key, code, len(raw), err)
			}
		}
		code, env, _ := p.do(t, http.MethodPost, "/api/list_keys", nil, "")
		var want []string
		for k := range images {
			want = append(want, k)
		}
		sort.Strings(want)
		got := append([]string(nil), env.Keys...)
		sort.Strings(got)
		if code != http.StatusOK || strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("list_keys: %d %v, want %v", code, got, want)
		}
	}
	check(p)
	code, env, _ := p.do(t, http.MethodPost, "/api/getNumNodes", nil, "")
	if code != http.StatusOK || env.NumNodes == nil || *env.NumNodes != 2 {
		t.Fatalf("getNumNodes: %d %+v", code, env)
	}
	code, env, _ = p.do(t, http.MethodGet, "/api/key/unknown-key", nil, "")
	if code != http.StatusNotFound || env.Success != "false" || env.Error.Code != 404 {
		t.Fatalf("unknown key: %d %+v", code, env)
	}

	p.stop(t)
	p2 := startPool(t, cfg)
	check(p2)
}

// TestBadUploadsChangeNothing sends every kind of bad upload and checks the
// 4xx, its message, and that the stored data is exactly what it was.
func TestBadUploadsChangeNothing(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxImageBytes = 64 << 10
	p := startPool(t, cfg)
	orig := pngImage(7, 8)
	if code, env := p.upload(t, "keep", orig); code != http.StatusOK {
		t.Fatalf("upload keep: %d %+v", code, env)
	}
	img := pngImage(9, 8)
	big := append(pngImage(10, 8), bytes.Repeat([]byte{0}, 70<<10)...)
	type tc struct {
		name   string
		body   func() (string, []byte)
		status int
		msg    string
	}
	form := func(fields map[string]string, file []byte, withFile bool) func() (string, []byte) {
		return func() (string, []byte) {
			field := ""
			if withFile {
				field = "file"
			}
			r, ct := multipartBody(t, fields, field, "x.png", file)
			var buf bytes.Buffer
			_, _ = buf.ReadFrom(r)
			return ct, buf.Bytes()
		}
	}
	cases := []tc{
		{"missing key", form(nil, img, true), 400, "key"},
		{"missing file", form(map[string]string{"key": "keep"}, nil, false), 400, "file"},
		{"empty key", form(map[string]string{"key": ""}, img, true), 400, "key"},
		{"key with space", form(map[string]string{"key": "a b"}, img, true), 400, "key"},
		{"key with slash", form(map[string]string{"key": "a/b"}, img, true), 400, "key"},
		{"dot dot", form(map[string]string{"key": "../keep"}, img, true), 400, "key"},
		{"control char", form(map[string]string{"key": "ke\x01ep"}, img, true), 400, "key"},
		{"10000 chars", form(map[string]string{"key": strings.Repeat("k", 10000)}, img, true), 400, "key"},
		{"oversized", form(map[string]string{"key": "keep"}, big, true), 413, ""},
		{"not an image", form(map[string]string{"key": "keep"}, []byte("just some text, not a picture"), true), 415, "image"},
		{"malformed multipart", func() (string, []byte) {
			return "multipart/form-data; boundary=xyz", []byte("--xyz\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nkeep\r\n--xy")
		}, 400, ""},
		{"not multipart", func() (string, []byte) { return "application/json", []byte(`{"key":"keep"}`) }, 400, ""},
	}
	for _, c := range cases {
		ct, body := c.body()
		code, env, raw := p.do(t, http.MethodPost, "/api/upload", bytes.NewReader(body), ct)
		if code != c.status || env.Success != "false" || env.Error.Code != c.status ||
			!strings.Contains(strings.ToLower(env.Error.Message), c.msg) {
			t.Errorf("%s: got %d %s, want %d mentioning %q", c.name, code, raw, c.status, c.msg)
		}
	}
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
		code, env, _ := p.do(t, m, "/api/upload", nil, "")
		if code != http.StatusMethodNotAllowed || env.Error.Code != 405 {
			t.Errorf("%s /api/upload: %d %+v", m, code, env)
		}
	}
	if code, env, _ := p.do(t, http.MethodGet, "/api/no-such-route", nil, ""); code != 404 || env.Success != "false" {
		t.Errorf("unknown route: %d %+v", code, env)
	}
	// Nothing stored, nothing lost.
	_, env, _ := p.do(t, http.MethodPost, "/api/list_keys", nil, "")
	if len(env.Keys) != 1 || env.Keys[0] != "keep" {
		t.Fatalf("keys after bad uploads: %v", env.Keys)
	}
	if code, raw, err := p.image("keep"); err != nil || code != 200 || !bytes.Equal(raw, orig) {
		t.Fatalf("keep changed: %d %v", code, err)
	}
}

// TestConcurrentUploadsOfOneKey: many concurrent uploads of one key end with
// one of the uploaded images, whole, and cache and store agree.
func TestConcurrentUploadsOfOneKey(t *testing.T) {
	p := startPool(t, testConfig(t))
	const n = 24
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := 1; i <= n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs <- p.uploadErr("contended", pngImage(i, 16))
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	code, raw, err := p.image("contended")
	if err != nil || code != 200 {
		t.Fatalf("read: %d %v", code, err)
	}
	idx, err := pngIndex(raw)
	if err != nil || idx < 1 || idx > n || !bytes.Equal(raw, pngImage(idx, 16)) {
		t.Fatalf("final image is not one of the uploads, whole: index %d, %v", idx, err)
	}
	// The cache answer equals the store's: clear the cache and read from the store.
	if code, env := p.jsonDo(t, http.MethodDelete, "/api/manager/cache/clear", nil); code != 200 {
		t.Fatalf("cache clear: %d %+v", code, env)
	}
	_, raw2, _ := p.image("contended")
	if !bytes.Equal(raw, raw2) {
		t.Fatal("cached image differs from the stored one")
	}
}

// TestNoReadReturnsAnOlderImageThanTheLastAnsweredUpload runs one writer
// uploading versions 1..N of a key in order while readers read it; a read
// that starts after upload k answered must return version ≥ k.
func TestNoReadReturnsAnOlderImageThanTheLastAnsweredUpload(t *testing.T) {
	cfg := testConfig(t)
	cfg.Nodes = 2
	p := startPool(t, cfg)
	if err := p.uploadErr("hot", pngImage(1, 8)); err != nil {
		t.Fatal(err)
	}
	var answered atomic.Int64
	answered.Store(1)
	stop := make(chan struct{})
	errs := make(chan error, 64)
	var reads atomic.Int64
	var wg sync.WaitGroup
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				floor := answered.Load()
				code, raw, err := p.image("hot")
				if err != nil || code != 200 {
					errs <- fmt.Errorf("read: %d %v", code, err)
					return
				}
				got, err := pngIndex(raw)
				if err != nil {
					errs <- err
					return
				}
				if int64(got) < floor {
					errs <- fmt.Errorf("stale read: version %d after upload %d answered", got, floor)
					return
				}
				reads.Add(1)
			}
		}()
	}
	for v := 2; v <= 40; v++ {
		if err := p.uploadErr("hot", pngImage(v, 8)); err != nil {
			t.Fatal(err)
		}
		answered.Store(int64(v))
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if reads.Load() == 0 {
		t.Fatal("no reads happened")
	}
	t.Logf("%d reads checked", reads.Load())
}
