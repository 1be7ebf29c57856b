// Package scaler is cachepool's autoscaler. Each tick in automatic mode it
// reads the pool miss rate of the last complete stats bucket and, by the rule
// of DESIGN.md, may enqueue one absolute-target resize command into the same
// ordered JetStream queue as manual resizes. Every tick's outcome, including
// "no action" and why, is evented and kept.
//
// The rule is the pure function [Decide], table-tested without I/O; [Run]
// gathers its inputs over NATS (the manager's mode and status, the manager's
// stored last-resize time, the stats service's rate) and acts on its output.
//
// Several scalers may run side by side: only the holder of the scaler lease
// (bus.RunLeased, key LeaseRole in bus.LeaseBucket) decides; the others stand
// by and take over within the lease TTL when it dies.
package scaler
