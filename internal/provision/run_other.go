//go:build !linux

package provision

import (
	"context"
	"errors"
)

// Run is only implemented on Linux.
func Run(ctx context.Context, opts Options) (*Result, error) {
	return &Result{Mode: opts.Mode, Notes: []string{}}, errors.New("provisioning needs Linux")
}
