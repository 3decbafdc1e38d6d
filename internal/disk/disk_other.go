//go:build !linux

package disk

import (
	"errors"
	"os"
)

// bty flashes from a Linux live environment; elsewhere the package builds
// so that tools and tests of other packages compile, and every call says
// it is unsupported.

var (
	SysRoot  = "/sys"
	ProcRoot = "/proc"
	DevRoot  = "/dev"
)

var errUnsupported = errors.New("block devices are only supported on Linux; run bty from the live environment")

func List() ([]Disk, error)         { return nil, errUnsupported }
func Get(path string) (Disk, error) { return Disk{}, errUnsupported }
func Partitions(name string) []string {
	return nil
}

// Target is a block device opened for flashing (Linux only).
type Target struct{}

func OpenTarget(path string, direct bool) (*Target, error) { return nil, errUnsupported }

func (t *Target) File() *os.File                             { return nil }
func (t *Target) Path() string                               { return "" }
func (t *Target) Size() int64                                { return 0 }
func (t *Target) LogicalBlockSize() int                      { return 512 }
func (t *Target) WriteAt(p []byte, off int64) (int, error)   { return 0, errUnsupported }
func (t *Target) ReadAt(p []byte, off int64) (int, error)    { return 0, errUnsupported }
func (t *Target) ZeroRange(off, n int64) (ZeroMethod, error) { return "", errUnsupported }
func (t *Target) Discard(off, n int64) error                 { return errUnsupported }
func (t *Target) Sync() error                                { return errUnsupported }
func (t *Target) RereadPartitions() error                    { return errUnsupported }
func (t *Target) Close() error                               { return nil }
