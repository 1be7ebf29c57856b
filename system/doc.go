// Package system assembles cachepool's services into running processes:
// Up runs everything in one process on an embedded (or external) NATS
// server, Serve runs one service against a NATS URL, and the local and exec
// launchers give the manager its cache nodes.
//
// It is the only package that imports the services; the cachepool command
// parses flags into a Config and calls it, and the whole-system tests call
// it directly.
package system
