package edge

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/cachepool/cachepool/contracts"
)

// Defaults of Config.
const (
	DefaultAddr           = "127.0.0.1:8080"
	DefaultRequestTimeout = 10 * time.Second
	// DefaultNodeTimeout bounds a read from the key's owner node, after
	// which the read falls back to the key-image store (the store's own
	// node timeout is the same).
	DefaultNodeTimeout = 2 * time.Second
	// DefaultResizeWait is how long POST /api/poolsize/change (and
	// configure_cache with numNodes) waits for the resize when no ?wait= is given.
	DefaultResizeWait = 60 * time.Second
	// MaxResizeWait bounds ?wait=.
	MaxResizeWait = 10 * time.Minute
	// multipartHeadroom is what an upload body may carry on top of the image:
	// the key field, part headers and boundaries.
	multipartHeadroom = 64 << 10
)

// Config configures the edge. The zero value of an optional field means its default.
type Config struct {
	// Addr is the HTTP listen address (default DefaultAddr). Ignored when Listener is set.
	Addr string
	// Listener, when set, is served instead of listening on Addr. Run closes
	// it when it returns, also on an early error.
	Listener net.Listener
	// MaxImageBytes is the largest accepted image (default contracts.DefaultMaxImageBytes);
	// a larger upload is answered 413.
	MaxImageBytes int64
	// AdminToken, when set, is required as "Authorization: Bearer <token>" on
	// every mutating manager endpoint, /api/delete_all and /api/configure_cache.
	AdminToken string
	// RequestTimeout bounds one bus request (default DefaultRequestTimeout).
	// Clears and waited resizes get longer bounds of their own.
	RequestTimeout time.Duration
	// NodeTimeout bounds the read from the owner node (default
	// DefaultNodeTimeout, at most RequestTimeout/2): a node that does not
	// answer in time (paused, overloaded, cut off) costs its reads this
	// long, then the store serves them.
	NodeTimeout time.Duration
}

// withDefaults returns c with every unset optional field defaulted.
func (c Config) withDefaults() Config {
	if c.Addr == "" && c.Listener == nil {
		c.Addr = DefaultAddr
	}
	if c.MaxImageBytes == 0 {
		c.MaxImageBytes = contracts.DefaultMaxImageBytes
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.NodeTimeout == 0 {
		c.NodeTimeout = DefaultNodeTimeout
	}
	c.NodeTimeout = min(c.NodeTimeout, c.RequestTimeout/2)
	return c
}

// Validate reports every problem of c at once. Unset optional fields are
// valid: they take their defaults.
func (c Config) Validate() error {
	var errs []error
	if c.MaxImageBytes < 0 {
		errs = append(errs, fmt.Errorf("edge: max image bytes must be positive, got %d", c.MaxImageBytes))
	}
	if c.RequestTimeout < 0 {
		errs = append(errs, fmt.Errorf("edge: request timeout must be positive, got %v", c.RequestTimeout))
	}
	if c.NodeTimeout < 0 {
		errs = append(errs, fmt.Errorf("edge: node timeout must be positive, got %v", c.NodeTimeout))
	}
	if c.Listener == nil && c.Addr != "" {
		if _, _, err := net.SplitHostPort(c.Addr); err != nil {
			errs = append(errs, fmt.Errorf("edge: addr %q: %w", c.Addr, err))
		}
	}
	return errors.Join(errs...)
}
