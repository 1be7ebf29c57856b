// Package dashboard serves the edge's web dashboard. This is a placeholder
// page; the dashboard's own change replaces this file's content.
//
// The edge mounts Handler on GET / and GET /dashboard/*path.
package dashboard

import "net/http"

const placeholder = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cachepool</title></head>
<body><h1>cachepool</h1><p>The dashboard is not built yet. The API lives under <code>/api/</code>;
health at <a href="/healthz">/healthz</a>, metrics at <a href="/metrics">/metrics</a>.</p></body></html>
`

// Handler serves the dashboard page. It is safe for concurrent use.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(placeholder))
	})
}
