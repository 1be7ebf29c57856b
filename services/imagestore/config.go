package imagestore

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cachepool/cachepool/contracts"
	"github.com/cachepool/cachepool/services/imagestore/blob"
)

// Defaults of a Config's zero fields.
const (
	// DefaultTimeout is below the edge's 10 s wait for a store answer, so a
	// blob store or database that hangs is answered with a 503 naming it
	// before the edge gives up with a bare 504.
	DefaultTimeout      = 8 * time.Second
	DefaultNodeTimeout  = 2 * time.Second
	DefaultClearTimeout = 2 * time.Minute
	DefaultMaxInFlight  = 256
	// MaxImageBytesLimit is the largest configurable image size; NATS
	// payloads beyond it are impractical.
	MaxImageBytesLimit = 64 << 20
)

// Config configures one key-image store instance. Several instances may
// share one database and one blob store.
type Config struct {
	// DataDir holds the blob folder (<DataDir>/blobs) and the SQLite file
	// (<DataDir>/cachepool.db) when those defaults are used.
	DataDir string
	// Blob is "file" (default) or an s3:// URL (see blob.ParseS3URL).
	Blob string
	// Database is "sqlite" (default) or a postgres:// URL.
	Database string
	// MaxImageBytes bounds one image (default contracts.DefaultMaxImageBytes).
	MaxImageBytes int64
	// Timeout bounds one put, load or list (default DefaultTimeout); a
	// store or database that does not answer in time gives a 503.
	Timeout time.Duration
	// NodeTimeout bounds one request to a cache node (default DefaultNodeTimeout).
	NodeTimeout time.Duration
	// ClearTimeout bounds clear_all and clear_cache (default DefaultClearTimeout).
	ClearTimeout time.Duration
	// MaxInFlight bounds the requests handled at once (default DefaultMaxInFlight).
	MaxInFlight int
}

// withDefaults fills the zero fields.
func (c Config) withDefaults() Config {
	if c.Blob == "" {
		c.Blob = "file"
	}
	if c.Database == "" {
		c.Database = "sqlite"
	}
	if c.MaxImageBytes == 0 {
		c.MaxImageBytes = contracts.DefaultMaxImageBytes
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.NodeTimeout == 0 {
		c.NodeTimeout = DefaultNodeTimeout
	}
	if c.ClearTimeout == 0 {
		c.ClearTimeout = DefaultClearTimeout
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	return c
}

// Validate reports every problem at once. Zero fields take their defaults.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	switch {
	case c.Blob == "file":
		if c.DataDir == "" {
			errs = append(errs, errors.New("data dir is required for the file blob store"))
		}
	case strings.HasPrefix(c.Blob, "s3://"):
		if _, err := blob.ParseS3URL(c.Blob); err != nil {
			errs = append(errs, fmt.Errorf("blob store: %w", err))
		}
	default:
		errs = append(errs, fmt.Errorf("blob store must be \"file\" or an s3:// URL, got %q", c.Blob))
	}
	switch {
	case c.Database == "sqlite":
		if c.DataDir == "" {
			errs = append(errs, errors.New("data dir is required for the sqlite database"))
		}
	case strings.HasPrefix(c.Database, "postgres://"), strings.HasPrefix(c.Database, "postgresql://"):
	default:
		errs = append(errs, errors.New("database must be \"sqlite\" or a postgres:// URL"))
	}
	if c.MaxImageBytes < 1 || c.MaxImageBytes > MaxImageBytesLimit {
		errs = append(errs, fmt.Errorf("max image bytes must be from 1 to %d, got %d", MaxImageBytesLimit, c.MaxImageBytes))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"timeout", c.Timeout}, {"node timeout", c.NodeTimeout}, {"clear timeout", c.ClearTimeout}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative, got %v", d.name, d.v))
		}
	}
	if c.MaxInFlight < 1 {
		errs = append(errs, fmt.Errorf("max in flight must be positive, got %d", c.MaxInFlight))
	}
	return errors.Join(errs...)
}
