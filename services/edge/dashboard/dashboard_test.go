package dashboard

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"
)

func get(t *testing.T, h http.Handler, method, target string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestPageIsServedAtRootAndDashboard(t *testing.T) {
	h := Handler()
	for _, p := range []string{"/", "/dashboard", "/dashboard/", "/dashboard/index.html"} {
		rec := get(t, h, http.MethodGet, p, nil)
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s = %d", p, rec.Code)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
			t.Errorf("GET %s Content-Type = %q", p, ct)
		}
		if cc := rec.Header().Get("Cache-Control"); cc != "no-cache" {
			t.Errorf("GET %s Cache-Control = %q, want no-cache (the page links versioned assets)", p, cc)
		}
		if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
			t.Errorf("GET %s CSP = %q", p, csp)
		}
		body := rec.Body.String()
		if strings.Contains(body, versionToken) {
			t.Errorf("GET %s still contains %s", p, versionToken)
		}
		if !strings.Contains(body, `id="node-table"`) {
			t.Errorf("GET %s is not the dashboard page", p)
		}
	}
}

var assetRef = regexp.MustCompile(`(?:src|href)="(/dashboard/static/[^"?]+)\?v=([0-9a-f]+)"`)

func TestLinkedAssetsAreVersionedAndCacheable(t *testing.T) {
	h := Handler()
	page := get(t, h, http.MethodGet, "/", nil).Body.String()
	refs := assetRef.FindAllStringSubmatch(page, -1)
	want := map[string]string{
		"/dashboard/static/app.js":      "text/javascript; charset=utf-8",
		"/dashboard/static/chart.js":    "text/javascript; charset=utf-8",
		"/dashboard/static/style.css":   "text/css; charset=utf-8",
		"/dashboard/static/favicon.svg": "image/svg+xml",
	}
	seen := map[string]bool{}
	for _, r := range refs {
		p, v := r[1], r[2]
		seen[p] = true
		rec := get(t, h, http.MethodGet, p+"?v="+v, nil)
		if rec.Code != http.StatusOK {
			t.Errorf("GET %s = %d", p, rec.Code)
			continue
		}
		if ct, ok := want[p]; ok && rec.Header().Get("Content-Type") != ct {
			t.Errorf("GET %s Content-Type = %q, want %q", p, rec.Header().Get("Content-Type"), ct)
		}
		if cc := rec.Header().Get("Cache-Control"); !strings.Contains(cc, "immutable") {
			t.Errorf("GET %s?v=current Cache-Control = %q, want immutable", p, cc)
		}
		if rec.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s lacks nosniff", p)
		}
		// Any other version is revalidated, never cached forever.
		if cc := get(t, h, http.MethodGet, p+"?v=old", nil).Header().Get("Cache-Control"); cc != "no-cache" {
			t.Errorf("GET %s?v=old Cache-Control = %q, want no-cache", p, cc)
		}
	}
	for p := range want {
		if !seen[p] {
			t.Errorf("the page does not link %s", p)
		}
	}
}

func TestConditionalRequestsAndErrors(t *testing.T) {
	h := Handler()
	first := get(t, h, http.MethodGet, "/dashboard/static/app.js", nil)
	etag := first.Header().Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	if rec := get(t, h, http.MethodGet, "/dashboard/static/app.js", map[string]string{"If-None-Match": etag}); rec.Code != http.StatusNotModified {
		t.Errorf("If-None-Match with the current ETag = %d, want 304", rec.Code)
	}
	if rec := get(t, h, http.MethodGet, "/dashboard/static/app.js", map[string]string{"If-None-Match": `"stale"`}); rec.Code != http.StatusOK {
		t.Errorf("If-None-Match with a stale ETag = %d, want 200", rec.Code)
	}
	head := get(t, h, http.MethodHead, "/", nil)
	if head.Code != http.StatusOK || head.Body.Len() != 0 || head.Header().Get("Content-Length") == "" {
		t.Errorf("HEAD / = %d with %d body bytes, Content-Length %q", head.Code, head.Body.Len(), head.Header().Get("Content-Length"))
	}
	for _, p := range []string{"/dashboard/static/missing.js", "/dashboard/static/", "/dashboard/static/../dashboard.go", "/other"} {
		if rec := get(t, h, http.MethodGet, p, nil); rec.Code != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", p, rec.Code)
		}
	}
	rec := get(t, h, http.MethodPost, "/", nil)
	if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("POST / = %d, Allow %q", rec.Code, rec.Header().Get("Allow"))
	}
}

var (
	idAttr  = regexp.MustCompile(`id="([^"]+)"`)
	idQuery = regexp.MustCompile(`\$\('#([A-Za-z0-9_-]+)`)
)

// TestScriptAndPageAgreeOnIDs catches a renamed element: every element the
// script looks up exists in the page, and the ids the browser test and
// operators' scripts rely on are present.
func TestScriptAndPageAgreeOnIDs(t *testing.T) {
	page, err := fs.ReadFile(files, "static/index.html")
	if err != nil {
		t.Fatal(err)
	}
	script, err := fs.ReadFile(files, "static/app.js")
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, m := range idAttr.FindAllStringSubmatch(string(page), -1) {
		if ids[m[1]] {
			t.Errorf("id %q appears twice in index.html", m[1])
		}
		ids[m[1]] = true
	}
	for _, m := range idQuery.FindAllStringSubmatch(string(script), -1) {
		if !ids[m[1]] {
			t.Errorf("app.js looks up #%s, which index.html lacks", m[1])
		}
	}
	for _, id := range []string{
		"btn-grow", "btn-shrink", "node-table", "resize-status", "resize-queue", "decisions", "events", "migration",
		"chart-nodes", "chart-rates", "chart-items", "chart-bytes", "chart-requests",
		"mode-manual", "mode-automatic", "auto-form", "auto-max", "auto-min", "auto-expand", "auto-shrink", "auto-save", "auto-error",
		"cache-form", "cache-capacity", "cache-policy", "cache-save", "cache-error",
		"btn-clear-cache", "btn-clear-data", "confirm", "confirm-yes", "confirm-no", "token-dialog", "token-input",
	} {
		if !ids[id] {
			t.Errorf("index.html lacks the stable id %q", id)
		}
	}
}

var externalURL = regexp.MustCompile(`(?i)(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)

// TestNoExternalResources: the page works without internet access, so no
// asset may reference another origin (SVG namespace URIs are names, not fetches).
func TestNoExternalResources(t *testing.T) {
	err := fs.WalkDir(files, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		f, err := files.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		b, err := io.ReadAll(f)
		if err != nil {
			return err
		}
		for _, u := range externalURL.FindAllString(string(b), -1) {
			if strings.HasSuffix(strings.ToLower(u), "//www.w3.org") {
				continue
			}
			t.Errorf("%s references %s", p, u)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestVersionChangesWithContent(t *testing.T) {
	fsys := fstest.MapFS{
		"static/index.html": {Data: []byte(`<script src="/dashboard/static/a.js?v={{VERSION}}"></script>`)},
		"static/a.js":       {Data: []byte("one")},
	}
	a, err := load(fsys)
	if err != nil {
		t.Fatal(err)
	}
	again, err := load(fsys)
	if err != nil {
		t.Fatal(err)
	}
	fsys["static/a.js"] = &fstest.MapFile{Data: []byte("two")}
	b, err := load(fsys)
	if err != nil {
		t.Fatal(err)
	}
	if a.version != again.version || len(a.version) != 12 {
		t.Errorf("version %q then %q: want a stable 12-hex version", a.version, again.version)
	}
	if a.version == b.version {
		t.Errorf("version %q did not change with an asset's content", a.version)
	}
	if !strings.Contains(string(b.index.body), "a.js?v="+b.version) {
		t.Errorf("index = %s, want it to link version %s", b.index.body, b.version)
	}
	if _, err := load(fstest.MapFS{"static/a.js": {Data: []byte("x")}}); err == nil {
		t.Error("load without index.html succeeded")
	}
}
