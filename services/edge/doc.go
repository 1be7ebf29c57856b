// Package edge is cachepool's HTTP edge: a Gin server that turns the
// front-end API, the manager API, /healthz and /metrics into bus requests.
//
// The edge holds no state beyond a watched copy of the partition table
// (contracts.BucketPool / contracts.KeyTable). A read asks the key's owner
// node (one bus round trip on a hit) and falls back to the key-image store on
// a miss or a node error; an upload is validated completely (key rules, size,
// image sniffing) before the store sees it.
//
// Every answer is the JSON envelope: {"success":"true", …} on success,
// {"success":"false","error":{"code":N,"message":"…"}} with HTTP status N on
// failure. Wire codes (*contracts.Error) become HTTP statuses in one place,
// httpStatus. Routes, error codes and key rules are listed in README.md.
//
// Run is the only entry point. Each call has its own metrics registry, so
// several edges may run in one process; Run returns nil after a graceful
// shutdown when its context ends.
package edge
