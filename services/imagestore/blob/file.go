package blob

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// tmpPrefix marks files being written; they are never listed as objects.
const tmpPrefix = ".tmp-"

// File keeps each object in its own file in one directory. All file access
// goes through an [os.Root] opened on that directory, so even a corrupted
// name could not reach a file outside it.
type File struct {
	dir  string
	root *os.Root
}

var _ Store = (*File)(nil)

// OpenFile opens (creating if needed) a file store in dir.
func OpenFile(dir string) (*File, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("blob: create %s: %w", dir, err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("blob: open %s: %w", dir, err)
	}
	return &File{dir: dir, root: root}, nil
}

// Dir returns the store's directory.
func (f *File) Dir() string { return f.dir }

// Put writes data to a temporary file, syncs it and renames it to a fresh
// name, so the object appears whole or not at all.
func (f *File) Put(ctx context.Context, data []byte) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	name := NewName()
	tmp := tmpPrefix + name
	w, err := f.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return "", fmt.Errorf("blob: create object: %w", err)
	}
	_, err = w.Write(data)
	if err == nil {
		err = w.Sync()
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = f.root.Rename(tmp, name)
	}
	if err != nil {
		_ = f.root.Remove(tmp)
		return "", fmt.Errorf("blob: write object: %w", err)
	}
	f.syncDir()
	return name, nil
}

// syncDir makes the rename durable; a failure only weakens crash safety.
func (f *File) syncDir() {
	if d, err := f.root.Open("."); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// Get reads the object.
func (f *File) Get(ctx context.Context, name string) ([]byte, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	data, err := f.root.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("blob: read object: %w", err)
	}
	return data, nil
}

// Delete removes the object's file.
func (f *File) Delete(ctx context.Context, name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := f.root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blob: delete object: %w", err)
	}
	return nil
}

// DeleteAll removes every object file (and leftover temporary files, which
// are not counted).
func (f *File) DeleteAll(ctx context.Context) (int64, error) {
	entries, err := os.ReadDir(f.dir)
	if err != nil {
		return 0, fmt.Errorf("blob: list %s: %w", f.dir, err)
	}
	var n int64
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		name := e.Name()
		isObject := ValidName(name) == nil
		if !isObject && !strings.HasPrefix(name, tmpPrefix) {
			continue
		}
		err := f.root.Remove(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("blob: delete object: %w", err)
		}
		if isObject {
			n++
		}
	}
	f.syncDir()
	return n, nil
}

// List returns the names of every object file.
func (f *File) List(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(f.dir)
	if err != nil {
		return nil, fmt.Errorf("blob: list %s: %w", f.dir, err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if e.Type().IsRegular() && ValidName(e.Name()) == nil {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// Close releases the directory handle.
func (f *File) Close() error { return f.root.Close() }

// Path returns the file path of an object (for tests and diagnostics).
func (f *File) Path(name string) string { return filepath.Join(f.dir, name) }
