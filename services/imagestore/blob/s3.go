package blob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// maxDeleteBatch is the most keys one DeleteObjects call accepts.
const maxDeleteBatch = 1000

// S3Config locates a bucket. The zero values mean: the region from the
// environment (else us-east-1), AWS's own endpoint, virtual-hosted style,
// and the standard credential chain (environment, shared files, IAM role).
type S3Config struct {
	Bucket string
	// Prefix is prepended to every object name ("" or ending in "/").
	Prefix    string
	Region    string
	Endpoint  string // e.g. http://127.0.0.1:9000 for MinIO or a test server
	PathStyle bool
	// Static credentials; used only when AccessKeyID is set.
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	// CreateBucket creates the bucket at open when it does not exist.
	CreateBucket bool
}

// ParseS3URL parses s3://bucket[/prefix][?region=R&endpoint=URL&path_style=true
// &access_key_id=K&secret_access_key=S&session_token=T&create_bucket=true].
// Unknown parameters are an error, so a typo is not silently ignored.
func ParseS3URL(raw string) (S3Config, error) {
	var c S3Config
	u, err := url.Parse(raw)
	if err != nil {
		return c, fmt.Errorf("blob: s3 url: %w", err)
	}
	if u.Scheme != "s3" {
		return c, fmt.Errorf("blob: s3 url must start with s3://, got %q", u.Scheme)
	}
	if u.Host == "" {
		return c, errors.New("blob: s3 url has no bucket (s3://bucket?...)")
	}
	c.Bucket = u.Host
	if p := strings.Trim(u.Path, "/"); p != "" {
		c.Prefix = p + "/"
	}
	for k, vs := range u.Query() {
		v := vs[len(vs)-1]
		switch k {
		case "region":
			c.Region = v
		case "endpoint":
			if _, err := url.ParseRequestURI(v); err != nil {
				return c, fmt.Errorf("blob: s3 url: endpoint %q is not a URL", v)
			}
			c.Endpoint = v
		case "path_style", "create_bucket":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return c, fmt.Errorf("blob: s3 url: %s must be true or false, got %q", k, v)
			}
			if k == "path_style" {
				c.PathStyle = b
			} else {
				c.CreateBucket = b
			}
		case "access_key_id":
			c.AccessKeyID = v
		case "secret_access_key":
			c.SecretAccessKey = v
		case "session_token":
			c.SessionToken = v
		default:
			return c, fmt.Errorf("blob: s3 url: unknown parameter %q", k)
		}
	}
	if (c.AccessKeyID == "") != (c.SecretAccessKey == "") {
		return c, errors.New("blob: s3 url: access_key_id and secret_access_key go together")
	}
	return c, nil
}

// S3 keeps objects in one bucket under an optional prefix.
type S3 struct {
	client *s3.Client
	bucket string
	prefix string
}

var _ Store = (*S3)(nil)

// OpenS3 builds a client for cfg. It does no network I/O unless
// cfg.CreateBucket is set.
func OpenS3(ctx context.Context, cfg S3Config) (*S3, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("blob: s3 bucket is empty")
	}
	var opts []func(*config.LoadOptions) error
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	if cfg.AccessKeyID != "" {
		opts = append(opts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, cfg.SessionToken)))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("blob: s3 config: %w", err)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = "us-east-1"
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.PathStyle
		// Checksums only where S3 requires them (DeleteObjects); bodies are
		// seekable anyway, so plain-HTTP endpoints work.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
	})
	s := &S3{client: client, bucket: cfg.Bucket, prefix: cfg.Prefix}
	if cfg.CreateBucket {
		if err := s.createBucket(ctx); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *S3) createBucket(ctx context.Context) error {
	_, err := s.client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(s.bucket)})
	var owned *types.BucketAlreadyOwnedByYou
	var exists *types.BucketAlreadyExists
	if err == nil || errors.As(err, &owned) || errors.As(err, &exists) {
		return nil
	}
	return fmt.Errorf("blob: create bucket %s: %w", s.bucket, err)
}

// Put uploads data under a fresh name. S3 makes a put atomic.
func (s *S3) Put(ctx context.Context, data []byte) (string, error) {
	name := NewName()
	_, err := s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        aws.String(s.bucket),
		Key:           aws.String(s.prefix + name),
		Body:          bytes.NewReader(data), // seekable: required over plain HTTP
		ContentLength: aws.Int64(int64(len(data))),
		ContentType:   aws.String("application/octet-stream"),
	})
	if err != nil {
		return "", fmt.Errorf("blob: s3 put: %w", err)
	}
	return name, nil
}

// Get downloads the object.
func (s *S3) Get(ctx context.Context, name string) ([]byte, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.prefix + name)})
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
		}
		return nil, fmt.Errorf("blob: s3 get: %w", err)
	}
	defer out.Body.Close()
	data, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, fmt.Errorf("blob: s3 get: read body: %w", err)
	}
	return data, nil
}

func isNotFound(err error) bool {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	if errors.As(err, &nsk) || errors.As(err, &nf) {
		return true
	}
	var api smithy.APIError
	if errors.As(err, &api) && (api.ErrorCode() == "NoSuchKey" || api.ErrorCode() == "NotFound") {
		return true
	}
	var re *awshttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound
}

// Delete removes the object (S3 deletes are idempotent).
func (s *S3) Delete(ctx context.Context, name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.prefix + name)})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("blob: s3 delete: %w", err)
	}
	return nil
}

// DeleteAll lists the prefix page by page (ListObjectsV2 pages hold at most
// 1000 keys) and deletes each page's objects with one DeleteObjects call.
// Only objects with generated names are touched.
func (s *S3) DeleteAll(ctx context.Context) (int64, error) {
	var n int64
	err := s.walk(ctx, func(keys []string) error {
		for len(keys) > 0 {
			chunk := keys[:min(len(keys), maxDeleteBatch)]
			keys = keys[len(chunk):]
			deleted, err := s.deleteBatch(ctx, chunk)
			n += deleted
			if err != nil {
				return err
			}
		}
		return nil
	})
	return n, err
}

// deleteBatch deletes 1..1000 keys and returns how many were deleted.
func (s *S3) deleteBatch(ctx context.Context, keys []string) (int64, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	ids := make([]types.ObjectIdentifier, len(keys))
	for i, k := range keys {
		ids[i] = types.ObjectIdentifier{Key: aws.String(k)}
	}
	out, err := s.client.DeleteObjects(ctx, &s3.DeleteObjectsInput{
		Bucket: aws.String(s.bucket),
		Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)},
	})
	if err != nil {
		return 0, fmt.Errorf("blob: s3 delete objects: %w", err)
	}
	if len(out.Errors) > 0 {
		e := out.Errors[0]
		return int64(len(keys) - len(out.Errors)), fmt.Errorf("blob: s3 delete objects: %d of %d failed, first %s: %s",
			len(out.Errors), len(keys), aws.ToString(e.Key), aws.ToString(e.Message))
	}
	return int64(len(keys)), nil
}

// walk calls fn with the full keys of each listed page's generated objects.
func (s *S3) walk(ctx context.Context, fn func(keys []string) error) error {
	in := &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket)}
	if s.prefix != "" {
		in.Prefix = aws.String(s.prefix)
	}
	p := s3.NewListObjectsV2Paginator(s.client, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("blob: s3 list: %w", err)
		}
		keys := make([]string, 0, len(page.Contents))
		for _, o := range page.Contents {
			k := aws.ToString(o.Key)
			if ValidName(strings.TrimPrefix(k, s.prefix)) == nil {
				keys = append(keys, k)
			}
		}
		if err := fn(keys); err != nil {
			return err
		}
	}
	return nil
}

// List returns every generated object's name (without the prefix).
func (s *S3) List(ctx context.Context) ([]string, error) {
	var names []string
	err := s.walk(ctx, func(keys []string) error {
		for _, k := range keys {
			names = append(names, strings.TrimPrefix(k, s.prefix))
		}
		return nil
	})
	return names, err
}

// Close is a no-op: the client holds no resources that need releasing.
func (s *S3) Close() error { return nil }
