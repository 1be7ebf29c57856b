package blob

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Store holds objects under names it generates.
type Store interface {
	// Put stores data under a fresh name and returns that name. The object
	// is complete or absent: a reader never sees part of it.
	Put(ctx context.Context, data []byte) (string, error)
	// Get returns the object's bytes, or an error wrapping ErrNotFound.
	Get(ctx context.Context, name string) ([]byte, error)
	// Delete removes the object; deleting a missing object is not an error.
	Delete(ctx context.Context, name string) error
	// DeleteAll removes every object of this store (any number of them) and
	// returns how many it removed.
	DeleteAll(ctx context.Context) (int64, error)
	// List returns the names of every object, in no particular order.
	List(ctx context.Context) ([]string, error)
	// Close releases the store's resources.
	Close() error
}

// ErrNotFound reports a missing object.
var ErrNotFound = errors.New("blob: object not found")

// ErrBadName reports a name that this package did not generate.
var ErrBadName = errors.New("blob: invalid object name")

// nameLen is the length of a generated name: 16 random bytes in hex.
const nameLen = 32

// NewName returns a fresh random object name (32 lowercase hex digits).
func NewName() string {
	var b [nameLen / 2]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("blob: crypto/rand failed: %v", err)) // never happens on supported platforms
	}
	return hex.EncodeToString(b[:])
}

// ValidName reports whether name has the shape of a generated name; only
// such names are ever used as file names or object keys.
func ValidName(name string) error {
	if len(name) != nameLen || strings.Trim(name, "0123456789abcdef") != "" {
		return fmt.Errorf("%w: %q", ErrBadName, name)
	}
	return nil
}
