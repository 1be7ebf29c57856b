package dashboard

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var files embed.FS

// AssetPrefix is the URL path under which the page's assets are served.
const AssetPrefix = "/dashboard/static/"

// versionToken is the placeholder in index.html that Handler replaces with
// the assets' content hash, so a new binary's page never runs a cached old script.
const versionToken = "{{VERSION}}"

// asset is one embedded file, ready to serve.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

// site is the immutable set of files Handler serves.
type site struct {
	index   asset
	assets  map[string]asset // by name under static/
	version string
	modTime time.Time
}

// Handler serves the dashboard: the page at "/" (and "/dashboard/"), and its
// assets at AssetPrefix+name. Assets requested with the current ?v= version
// are cacheable forever (the page links them that way); the page itself and
// unversioned assets are revalidated on every load through their ETag.
// HEAD is answered like GET; other methods get 405. It is safe for
// concurrent use and allocates nothing per request beyond the response.
func Handler() http.Handler {
	s, err := load(files)
	if err != nil {
		// The files are embedded at build time; this only fails if the
		// package itself is broken, which its tests catch.
		panic("dashboard: " + err.Error())
	}
	return s
}

func load(fsys fs.FS) (*site, error) {
	s := &site{assets: map[string]asset{}, modTime: time.Now().UTC().Truncate(time.Second)}
	h := sha256.New()
	var index []byte
	err := fs.WalkDir(fsys, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(p, "static/")
		if name == "index.html" {
			index = b
			return nil
		}
		h.Write([]byte(name))
		h.Write(b)
		s.assets[name] = newAsset(name, b)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if index == nil {
		return nil, fs.ErrNotExist
	}
	s.version = hex.EncodeToString(h.Sum(nil))[:12]
	s.index = newAsset("index.html", bytes.ReplaceAll(index, []byte(versionToken), []byte(s.version)))
	return s, nil
}

func newAsset(name string, b []byte) asset {
	sum := sha256.Sum256(b)
	ct := mime.TypeByExtension(path.Ext(name))
	switch path.Ext(name) { // do not depend on the host's mime tables for these
	case ".html":
		ct = "text/html; charset=utf-8"
	case ".css":
		ct = "text/css; charset=utf-8"
	case ".js":
		ct = "text/javascript; charset=utf-8"
	case ".svg":
		ct = "image/svg+xml"
	}
	if ct == "" {
		ct = "application/octet-stream"
	}
	return asset{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
}

// contentSecurityPolicy allows the page nothing beyond its own origin.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func (s *site) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	hdr := w.Header()
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	p := r.URL.Path
	switch {
	case p == "/" || p == "/dashboard" || p == "/dashboard/" || p == "/dashboard/index.html":
		hdr.Set("Content-Security-Policy", contentSecurityPolicy)
		hdr.Set("X-Frame-Options", "DENY")
		hdr.Set("Cache-Control", "no-cache")
		s.serve(w, r, s.index)
	case strings.HasPrefix(p, AssetPrefix):
		a, found := s.assets[strings.TrimPrefix(p, AssetPrefix)]
		if !found {
			http.NotFound(w, r)
			return
		}
		if r.URL.Query().Get("v") == s.version {
			hdr.Set("Cache-Control", "public, max-age=31536000, immutable")
		} else {
			hdr.Set("Cache-Control", "no-cache")
		}
		s.serve(w, r, a)
	default:
		http.NotFound(w, r)
	}
}

// serve answers a with conditional-request support (ETag, If-None-Match).
func (s *site) serve(w http.ResponseWriter, r *http.Request, a asset) {
	w.Header().Set("Content-Type", a.contentType)
	w.Header().Set("ETag", a.etag)
	http.ServeContent(w, r, "", s.modTime, bytes.NewReader(a.body))
}
