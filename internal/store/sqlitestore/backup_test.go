package sqlitestore

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

func putTestMachine(t testing.TB, s *SQLite, i int) fleet.MAC {
	t.Helper()
	mac, err := putMachineN(s, i)
	if err != nil {
		t.Fatal(err)
	}
	return mac
}

func putMachineN(s *SQLite, i int) (fleet.MAC, error) {
	mac := benchMAC(i)
	img := fmt.Sprintf("img-%d.img.zst", i)
	host := fmt.Sprintf("node%d", i)
	ud := fmt.Sprintf("#cloud-config\nhostname: node%d\n", i)
	pol := []fleet.Policy{fleet.PolicyLocal, fleet.PolicyFlash, fleet.PolicyTUI}[i%3]
	_, _, err := store.PutMachine(context.Background(), s, mac,
		fleet.MachineUpdate{Image: &img, Hostname: &host, BootPolicy: &pol, UserData: &ud}, time.Now().UTC())
	if err != nil {
		return mac, fmt.Errorf("PutMachine %s: %w", mac, err)
	}
	return mac, nil
}

// A backup taken while writes go on holds every machine acknowledged
// before Backup was called, with its exact fields, and restores (copied
// into place as state.db) to a database Open accepts and
// integrity_check passes (issue 17, item 10).
func TestBackupWhileWritingRestoresAcknowledged(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, filepath.Join(dir, "state.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const before = 300
	var mu sync.Mutex
	var acked []fleet.MAC
	for i := range before {
		acked = append(acked, putTestMachine(t, s, i))
	}

	// Writers keep acknowledging new machines during the backup.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				mac, err := putMachineN(s, 100000*(g+1)+i)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked = append(acked, mac)
				mu.Unlock()
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	want := append([]fleet.MAC(nil), acked...)
	mu.Unlock()
	backup := filepath.Join(dir, "backups", "b.db")
	os.MkdirAll(filepath.Dir(backup), 0o700)
	err = s.Backup(ctx, backup, false)
	time.Sleep(20 * time.Millisecond)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if len(want) <= before {
		t.Fatalf("no write was acknowledged during the test's writers' head start (%d)", len(want))
	}
	fi, err := os.Stat(backup)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("backup mode %v, want 0600", fi.Mode().Perm())
	}

	// Restore: copy the backup into place as a new state.db.
	restored := filepath.Join(t.TempDir(), "state.db")
	copyFile(t, backup, restored)
	r, err := Open(ctx, restored, nil)
	if err != nil {
		t.Fatalf("opening the restored backup: %v", err)
	}
	defer r.Close()
	if probs, err := r.IntegrityCheck(ctx); err != nil || len(probs) > 0 {
		t.Fatalf("restored backup: integrity_check %v, %v", probs, err)
	}
	missing := 0
	for _, mac := range want {
		orig, err := s.GetMachine(ctx, mac)
		if err != nil {
			t.Fatal(err)
		}
		got, err := r.GetMachine(ctx, mac)
		if err != nil {
			missing++
			if missing < 5 {
				t.Errorf("machine %s, acknowledged before the backup, is not in it: %v", mac, err)
			}
			continue
		}
		if !reflect.DeepEqual(got, orig) {
			t.Errorf("machine %s in the backup:\n %+v\nwant\n %+v", mac, got, orig)
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged machines missing from the backup", missing, len(want))
	}
	t.Logf("%d machines acknowledged before the backup, all restored", len(want))
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestBackupRefusesExistingFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, filepath.Join(dir, "state.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	putTestMachine(t, s, 1)
	path := filepath.Join(dir, "b.db")
	if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = s.Backup(ctx, path, false)
	if err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("Backup over an existing file: %v; want an error saying it exists", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "keep me" {
		t.Fatal("Backup changed the existing file")
	}
	if err := s.Backup(ctx, path, true); err != nil {
		t.Fatalf("Backup with overwrite: %v", err)
	}
	if err := s.Backup(ctx, filepath.Join(dir, "state.db"), true); err == nil {
		t.Fatal("Backup onto the state database itself succeeded")
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".state-backup-*"))
	if len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// IntegrityCheck finds a page garbled while the store is open (the
// damage Open's quick_check would have refused at start).
func TestIntegrityCheckReportsGarbledPage(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	seedMachines(t, s, 2000)
	var pageSize int64
	if err := s.r.QueryRow("PRAGMA page_size").Scan(&pageSize); err != nil {
		t.Fatal(err)
	}
	if probs, err := s.IntegrityCheck(ctx); err != nil || len(probs) > 0 {
		t.Fatalf("sound database: integrity_check %v, %v; want none", probs, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	garblePage(t, path, pageSize, fi.Size()/pageSize/2)
	probs, err := s.IntegrityCheck(ctx)
	if err == nil && len(probs) == 0 {
		t.Fatal("integrity_check of a database with a garbled page reported nothing")
	}
	t.Logf("integrity_check: %v, %v", probs, err)
}
