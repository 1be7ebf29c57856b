package blob

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
)

// Open opens the store described by spec: "" or "file" is a [File] store
// in <dataDir>/blobs; "s3://..." is an [S3] store (see [ParseS3URL]).
func Open(ctx context.Context, spec, dataDir string) (Store, error) {
	switch {
	case spec == "" || spec == "file":
		if dataDir == "" {
			return nil, fmt.Errorf("blob: the file store needs a data dir")
		}
		return OpenFile(filepath.Join(dataDir, "blobs"))
	case strings.HasPrefix(spec, "s3://"):
		cfg, err := ParseS3URL(spec)
		if err != nil {
			return nil, err
		}
		return OpenS3(ctx, cfg)
	}
	return nil, fmt.Errorf("blob: store must be \"file\" or an s3:// URL, got %q", spec)
}
