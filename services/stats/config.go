package stats

import (
	"errors"
	"fmt"
	"time"
)

// Config configures the stats service. The zero value of a field means its default.
type Config struct {
	// Bucket is the width of one bucket (default 1m).
	Bucket time.Duration
	// Buckets is how many closed buckets are kept and served (default 30).
	Buckets int
	// Replicas of the KV bucket contracts.BucketStats (default 1; 3 on a cluster).
	Replicas int
	// Grace is how long after a bucket's end it is considered complete, so
	// reports in flight at the boundary are in it when it is evented
	// (default Bucket/20, at most 2s). Later reports still land in it.
	Grace time.Duration

	now func() time.Time // tests inject a clock; nil means time.Now
}

// Defaults for Config.
const (
	DefaultBucket  = time.Minute
	DefaultBuckets = 30
)

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.Bucket == 0 {
		c.Bucket = DefaultBucket
	}
	if c.Buckets == 0 {
		c.Buckets = DefaultBuckets
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Grace == 0 {
		c.Grace = min(c.Bucket/20, 2*time.Second)
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

// Validate reports every invalid field at once. Zero fields are valid (defaults).
func (c Config) Validate() error {
	var errs []error
	if c.Bucket < 0 || (c.Bucket > 0 && c.Bucket < 10*time.Millisecond) {
		errs = append(errs, fmt.Errorf("stats: bucket must be at least 10ms, got %v", c.Bucket))
	}
	if c.Bucket%time.Millisecond != 0 {
		errs = append(errs, fmt.Errorf("stats: bucket must be a whole number of milliseconds, got %v", c.Bucket))
	}
	if c.Bucket > 24*time.Hour {
		errs = append(errs, fmt.Errorf("stats: bucket must be at most 24h, got %v", c.Bucket))
	}
	if c.Buckets < 0 || c.Buckets > 10000 {
		errs = append(errs, fmt.Errorf("stats: buckets must be within 1..10000, got %d", c.Buckets))
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("stats: replicas must be within 1..5, got %d", c.Replicas))
	}
	if c.Grace < 0 {
		errs = append(errs, fmt.Errorf("stats: grace must not be negative, got %v", c.Grace))
	}
	if b := c.withDefaults(); b.Grace >= b.Bucket {
		errs = append(errs, fmt.Errorf("stats: grace (%v) must be shorter than the bucket (%v)", b.Grace, b.Bucket))
	}
	return errors.Join(errs...)
}

var errBucketWidth = errors.New("stats: stored bucket has another width")
