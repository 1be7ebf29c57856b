package contracts

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Entry is one cached image as it moves between nodes.
type Entry struct {
	Key         string
	Version     uint64
	ContentType string
	Value       []byte
}

// Size is the number of bytes the entry counts against a node's capacity
// (key + value).
func (e Entry) Size() int64 { return int64(len(e.Key) + len(e.Value)) }

var batchMagic = [4]byte{'C', 'P', 'B', '1'}

// ErrBadBatch reports a body that is not a well-formed batch.
var ErrBadBatch = errors.New("contracts: malformed entry batch")

// EncodeBatch lays entries out as: "CPB1", count (u32), then per entry
// key length (u16), key, content-type length (u16), content type,
// version (u64), value length (u32), value. Integers are big-endian.
func EncodeBatch(entries []Entry) []byte {
	n := 8
	for _, e := range entries {
		n += 2 + len(e.Key) + 2 + len(e.ContentType) + 8 + 4 + len(e.Value)
	}
	b := make([]byte, 0, n)
	b = append(b, batchMagic[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(entries)))
	for _, e := range entries {
		b = binary.BigEndian.AppendUint16(b, uint16(len(e.Key)))
		b = append(b, e.Key...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(e.ContentType)))
		b = append(b, e.ContentType...)
		b = binary.BigEndian.AppendUint64(b, e.Version)
		b = binary.BigEndian.AppendUint32(b, uint32(len(e.Value)))
		b = append(b, e.Value...)
	}
	return b
}

// DecodeBatch parses EncodeBatch's layout. Values alias b.
func DecodeBatch(b []byte) ([]Entry, error) {
	if len(b) < 8 || [4]byte(b[:4]) != batchMagic {
		return nil, ErrBadBatch
	}
	count := binary.BigEndian.Uint32(b[4:8])
	b = b[8:]
	if uint64(count) > uint64(len(b))/16+1 {
		return nil, fmt.Errorf("%w: count %d too large for %d bytes", ErrBadBatch, count, len(b))
	}
	out := make([]Entry, 0, count)
	take := func(n int) ([]byte, bool) {
		if n > len(b) {
			return nil, false
		}
		v := b[:n]
		b = b[n:]
		return v, true
	}
	for i := uint32(0); i < count; i++ {
		var e Entry
		h, ok := take(2)
		if !ok {
			return nil, ErrBadBatch
		}
		k, ok := take(int(binary.BigEndian.Uint16(h)))
		if !ok {
			return nil, ErrBadBatch
		}
		e.Key = string(k)
		if h, ok = take(2); !ok {
			return nil, ErrBadBatch
		}
		ct, ok := take(int(binary.BigEndian.Uint16(h)))
		if !ok {
			return nil, ErrBadBatch
		}
		e.ContentType = string(ct)
		v, ok := take(8)
		if !ok {
			return nil, ErrBadBatch
		}
		e.Version = binary.BigEndian.Uint64(v)
		if h, ok = take(4); !ok {
			return nil, ErrBadBatch
		}
		if e.Value, ok = take(int(binary.BigEndian.Uint32(h))); !ok {
			return nil, ErrBadBatch
		}
		out = append(out, e)
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrBadBatch, len(b))
	}
	return out, nil
}
