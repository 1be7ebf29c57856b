package scaler

import (
	"errors"
	"fmt"
	"time"

	"github.com/cachepool/cachepool/contracts"
)

// Config configures the scaler. The zero value of a field means its default.
type Config struct {
	// Tick is the decision period (default 1m).
	Tick time.Duration
	// Bucket is the stats bucket width (default 1m): it tells how fresh the
	// last complete bucket must be.
	Bucket time.Duration
	// Cooldown is the quiet time after a resize completes (default one Bucket).
	// Independently of it, a decision needs a stats bucket that started after
	// the last resize completed.
	Cooldown time.Duration
	// MaxNodes bounds growth (default contracts.DefaultMaxNodes); the
	// manager's own max_nodes also applies when it is lower.
	MaxNodes int
	// Keep is how many recent decisions are kept and served (default 100).
	Keep int
	// Replicas of the KV bucket contracts.BucketScaler (default 1).
	Replicas int
	// LeaseTTL is the scaler lease's TTL (default bus.DefaultLeaseTTL,
	// whole seconds): a standby scaler takes over within about this long
	// after the active one dies, at once after it stops cleanly.
	LeaseTTL time.Duration

	now func() time.Time // tests inject a clock; nil means time.Now
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.Tick == 0 {
		c.Tick = time.Minute
	}
	if c.Bucket == 0 {
		c.Bucket = time.Minute
	}
	if c.Cooldown == 0 {
		c.Cooldown = c.Bucket
	}
	if c.MaxNodes == 0 {
		c.MaxNodes = contracts.DefaultMaxNodes
	}
	if c.Keep == 0 {
		c.Keep = 100
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

// Validate reports every invalid field at once. Zero fields are valid (defaults).
func (c Config) Validate() error {
	var errs []error
	if c.Tick < 0 || (c.Tick > 0 && c.Tick < 10*time.Millisecond) {
		errs = append(errs, fmt.Errorf("scaler: tick must be at least 10ms, got %v", c.Tick))
	}
	if c.Bucket < 0 || (c.Bucket > 0 && c.Bucket < 10*time.Millisecond) {
		errs = append(errs, fmt.Errorf("scaler: bucket must be at least 10ms, got %v", c.Bucket))
	}
	if c.Cooldown < 0 {
		errs = append(errs, fmt.Errorf("scaler: cooldown must not be negative, got %v", c.Cooldown))
	}
	if c.MaxNodes < 0 || c.MaxNodes > 1024 {
		errs = append(errs, fmt.Errorf("scaler: max nodes must be within 1..1024, got %d", c.MaxNodes))
	}
	if c.Keep < 0 || c.Keep > 10000 {
		errs = append(errs, fmt.Errorf("scaler: keep must be within 1..10000, got %d", c.Keep))
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("scaler: replicas must be within 1..5, got %d", c.Replicas))
	}
	if c.LeaseTTL < 0 {
		errs = append(errs, fmt.Errorf("scaler: lease ttl must not be negative, got %v", c.LeaseTTL))
	}
	return errors.Join(errs...)
}
