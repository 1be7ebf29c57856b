package cachenode

import (
	"errors"
	"fmt"
	"time"

	"github.com/cachepool/cachepool/contracts"
)

// Defaults of Config's zero fields.
const (
	DefaultReportInterval    = 5 * time.Second
	DefaultHeartbeatInterval = 2 * time.Second
	DefaultShutdownGrace     = 5 * time.Second
)

// Config is one cache node's configuration. Zero fields take the defaults:
// contracts.DefaultCapacityMB, contracts.DefaultPolicy, DefaultReportInterval,
// DefaultHeartbeatInterval and DefaultShutdownGrace.
type Config struct {
	// ID names the node; it is the last token of the node's subjects.
	ID contracts.NodeID
	// CapacityMB bounds the stored bytes (key + value), 1 MB = 1 MiB.
	CapacityMB float64
	// Policy is "lru" or "random" (aliases per contracts.NormalizePolicy).
	Policy string
	// ReportInterval is the period of the stats reports (counter deltas).
	ReportInterval time.Duration
	// HeartbeatInterval is the period of the heartbeats.
	HeartbeatInterval time.Duration
	// Standby marks a node started by an operator that waits for the
	// manager to activate it; it is carried in the announcement.
	Standby bool
	// ShutdownGrace bounds how long in-flight requests (a handoff) may run
	// after Run's context ends.
	ShutdownGrace time.Duration
}

func (c Config) withDefaults() Config {
	if c.CapacityMB == 0 {
		c.CapacityMB = contracts.DefaultCapacityMB
	}
	if c.Policy == "" {
		c.Policy = contracts.DefaultPolicy
	}
	if c.ReportInterval == 0 {
		c.ReportInterval = DefaultReportInterval
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = DefaultShutdownGrace
	}
	c.Policy = contracts.NormalizePolicy(c.Policy)
	return c
}

// Validate reports every problem of the configuration at once (after
// defaults are applied to zero fields).
func (c Config) Validate() error {
	var errs []error
	if err := c.ID.Valid(); err != nil {
		errs = append(errs, fmt.Errorf("id: %w", err))
	}
	d := c.withDefaults()
	if err := (contracts.CacheConfig{CapacityMB: d.CapacityMB, Policy: c.orDefaultPolicy()}).Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.ReportInterval < 0 {
		errs = append(errs, fmt.Errorf("report interval must be positive, got %v", c.ReportInterval))
	}
	if c.HeartbeatInterval < 0 {
		errs = append(errs, fmt.Errorf("heartbeat interval must be positive, got %v", c.HeartbeatInterval))
	}
	if c.ShutdownGrace < 0 {
		errs = append(errs, fmt.Errorf("shutdown grace must be positive, got %v", c.ShutdownGrace))
	}
	return errors.Join(errs...)
}

func (c Config) orDefaultPolicy() string {
	if c.Policy == "" {
		return contracts.DefaultPolicy
	}
	return c.Policy
}

func (c Config) cacheConfig() contracts.CacheConfig {
	return contracts.CacheConfig{CapacityMB: c.CapacityMB, Policy: c.Policy}
}
