package sqlitestore

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A state.db that exists but is empty must not become a new, empty
// fleet (issue 17, item 9): Open refuses it, says what to do, and leaves
// the file as it was.
func TestOpenRefusesEmptyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), path, nil)
	if err == nil {
		s.Close()
		t.Fatal("Open of a 0-byte state.db succeeded; want an error")
	}
	for _, w := range []string{path, "empty (0 bytes)", "restore it from a backup", "move it away to start a new fleet"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 0 {
		t.Errorf("Open wrote %d bytes into the empty file; want it left as it was", fi.Size())
	}
	for _, side := range []string{"-wal", "-shm", "-journal"} {
		if _, err := os.Stat(path + side); err == nil {
			t.Errorf("Open left %s beside the refused file", path+side)
		}
	}
}

func TestOpenRefusesRandomBytes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	junk := make([]byte, 8192)
	rand.Read(junk)
	if err := os.WriteFile(path, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), path, nil)
	if err == nil {
		s.Close()
		t.Fatal("Open of random bytes succeeded; want an error")
	}
	for _, w := range []string{path, "not an SQLite database", "restore it from a backup"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(junk) {
		t.Error("Open changed the refused file")
	}
}

// A real database with one garbled page opens at the SQLite level but
// fails PRAGMA quick_check: Open must refuse it and name the check.
func TestOpenRefusesDamagedDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(context.Background(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	seedMachines(t, s, 2000)
	var pageSize, pages int64
	if err := s.r.QueryRow("PRAGMA page_size").Scan(&pageSize); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopening for the count would checkpoint again; the file is
	// checkpointed by Close, so its size is the page count.
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	pages = fi.Size() / pageSize
	if pages < 8 {
		t.Fatalf("only %d pages: seed more machines", pages)
	}
	garblePage(t, path, pageSize, pages/2)
	s, err = Open(context.Background(), path, nil)
	if err == nil {
		s.Close()
		t.Fatal("Open of a database with a garbled page succeeded; want the quick_check error")
	}
	for _, w := range []string{path, "quick_check", "restore it from a backup"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}

// A path that does not exist yet is a first start: a new database.
func TestOpenFreshPathStillCreates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new", "state.db")
	s, err := Open(context.Background(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	seedMachines(t, s, 3)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(context.Background(), path, nil)
	if err != nil {
		t.Fatalf("reopening the database Open created: %v", err)
	}
	defer s.Close()
	var n int
	if err := s.r.QueryRow("SELECT count(*) FROM machines").Scan(&n); err != nil || n != 3 {
		t.Errorf("machines after reopen = %d, %v; want 3", n, err)
	}
}

// garblePage overwrites page n (0-based, of pageSize bytes) of the database file at path
// with junk: a page in the middle of the machines table, past page 1
// (the header and schema), which only a structural check finds.
func garblePage(t *testing.T, path string, pageSize, n int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	junk := make([]byte, pageSize)
	for i := range junk {
		junk[i] = byte(0xA5 ^ i)
	}
	if _, err := f.WriteAt(junk, n*pageSize); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}
