//go:build !cgo

package image

import "errors"

// Without cgo there is no reference zstd library to compare with.
func zstdReference([]byte) ([]byte, error) { return nil, errors.New("no reference zstd without cgo") }

const haveZstdReference = false
