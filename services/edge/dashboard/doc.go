// Package dashboard serves cachepool's operator dashboard: one page of plain
// HTML, CSS and JavaScript embedded in the binary (no build step, no CDN,
// no network access beyond the edge's own API), with a small hand-written
// SVG line-chart module in static/chart.js.
//
// The edge mounts [Handler] on GET / (the page) and GET /dashboard/*path
// (its assets, under /dashboard/static/). The page talks only to the edge's
// HTTP API (/api/manager/..., /api/events); it holds no state of its own
// beyond the admin token it keeps in the browser's localStorage.
package dashboard
