// Package e2e holds cachepool's whole-system tests: the services assembled
// by package system, in one process and as separate processes, driven
// through HTTP, NATS and the cachepool command.
package e2e
