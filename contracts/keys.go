package contracts

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxKeyBytes is the longest key, in bytes of UTF-8.
const MaxKeyBytes = 250

// Key rules, documented in the README:
//   - 1 to MaxKeyBytes bytes of valid UTF-8;
//   - no whitespace, no control characters, no '/' or '\\';
//   - not "." and no ".." anywhere;
//   - letters and digits of any script are welcome, as is punctuation such as - _ . : @ + = , ~.
var (
	ErrKeyEmpty   = errors.New("key is empty")
	ErrKeyTooLong = fmt.Errorf("key is longer than %d bytes", MaxKeyBytes)
	ErrKeyInvalid = errors.New("key has a character that is not allowed (whitespace, control, '/', '\\' or '..')")
	ErrKeyUTF8    = errors.New("key is not valid UTF-8")
)

// ValidateKey reports why key is not acceptable, or nil.
func ValidateKey(key string) error {
	switch {
	case key == "":
		return ErrKeyEmpty
	case len(key) > MaxKeyBytes:
		return ErrKeyTooLong
	case !utf8.ValidString(key):
		return ErrKeyUTF8
	case key == "." || strings.Contains(key, ".."):
		return ErrKeyInvalid
	}
	for _, r := range key {
		if unicode.IsSpace(r) || unicode.IsControl(r) || r == '/' || r == '\\' || !unicode.IsPrint(r) {
			return ErrKeyInvalid
		}
	}
	return nil
}
