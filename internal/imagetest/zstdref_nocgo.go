//go:build !cgo

package imagetest

import "errors"

// HaveZstdReference says whether ZstdReference decodes (it needs cgo).
const HaveZstdReference = false

// ZstdReference needs cgo; without it there is no reference to ask.
func ZstdReference([]byte) ([]byte, error) {
	return nil, errors.New("no reference zstd library without cgo")
}
