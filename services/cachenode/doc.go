// Package cachenode is one cache node of the pool: an in-memory,
// capacity-bounded, versioned image store (package store) served as the micro
// service contracts.ServiceNode on the node's id-addressed subjects
// (contracts.NodeGet, NodePut, NodePutBatch, NodeInvalidate, NodeClear,
// NodeConfigure, NodeStatsSubject, NodeHandoff, NodeDrop).
//
// Run serves one node until its context ends. Several nodes can run in one
// process on one connection; each Run is independent. A node announces
// itself on contracts.NodeAnnounce when it serves, publishes heartbeats and
// per-interval counter deltas, and announces contracts.NodeGone when it stops
// cleanly. See README.md for the wire formats.
package cachenode
