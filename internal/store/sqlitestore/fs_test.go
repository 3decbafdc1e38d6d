package sqlitestore

import (
	"io/fs"
	"testing/fstest"
)

// testFS is a map of file names to contents, as an fs.FS.
type testFS map[string]string

func (m testFS) Open(name string) (fs.File, error) {
	mfs := fstest.MapFS{}
	for k, v := range m {
		mfs[k] = &fstest.MapFile{Data: []byte(v)}
	}
	return mfs.Open(name)
}
