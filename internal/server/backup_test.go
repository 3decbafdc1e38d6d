package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
	"github.com/btyproject/bty/internal/store/sqlitestore"
)

func putBackupMachines(t *testing.T, st store.Store, n int) {
	t.Helper()
	for i := range n {
		mac := fleet.MustParseMAC(fmt.Sprintf("02:00:00:00:%02x:%02x", i>>8, i&0xff))
		img, host := fmt.Sprintf("img-%d.img.zst", i), fmt.Sprintf("node%d", i)
		if _, _, err := store.PutMachine(context.Background(), st, mac,
			fleet.MachineUpdate{Image: &img, Hostname: &host}, time.Now().UTC()); err != nil {
			t.Fatal(err)
		}
	}
}

// `bty-web backup FILE` copies the state database a running store has
// open (its last writes still in the WAL) and `bty-web check` passes it;
// the backup, opened as a state database, has every machine with its
// fields (issue 17, item 10).
func TestMainBackupWhileOpen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlitestore.Open(ctx, filepath.Join(dir, "state.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	putBackupMachines(t, st, 200)
	want, err := st.ListMachines(ctx)
	if err != nil {
		t.Fatal(err)
	}

	out := filepath.Join(t.TempDir(), "copy.db")
	var stdout, stderr bytes.Buffer
	if code := Main(ctx, []string{"backup", "--state-dir", dir, out}, strings.NewReader(""), &stdout, &stderr); code != 0 {
		t.Fatalf("bty-web backup: exit %d, stderr %q", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), out) {
		t.Errorf("stdout %q does not name %s", stdout.String(), out)
	}
	stdout.Reset()
	stderr.Reset()
	if code := Main(ctx, []string{"backup", "--state-dir", dir, out}, strings.NewReader(""), &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "exists") {
		t.Errorf("second bty-web backup to the same file: exit %d, stderr %q; want 1 and \"exists\"", code, stderr.String())
	}
	stdout.Reset()
	stderr.Reset()
	if code := Main(ctx, []string{"check", "--state-dir", dir}, strings.NewReader(""), &stdout, &stderr); code != 0 || !strings.HasPrefix(stdout.String(), "ok") {
		t.Errorf("bty-web check: exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}

	// Restore as the docs say: copy the backup into place as state.db.
	restored := t.TempDir()
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(restored, "state.db"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := sqlitestore.Open(ctx, filepath.Join(restored, "state.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := r.ListMachines(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) || !reflect.DeepEqual(got, want) {
		t.Fatalf("restored backup has %d machines, want %d equal to the original's", len(got), len(want))
	}
}

func TestMainBackupCheckNoStateDB(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{{"backup", "--state-dir", dir, filepath.Join(dir, "x.db")}, {"check", "--state-dir", dir}} {
		var stdout, stderr bytes.Buffer
		if code := Main(context.Background(), args, strings.NewReader(""), &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "no state database") {
			t.Errorf("%v: exit %d, stderr %q", args, code, stderr.String())
		}
		if _, err := os.Stat(filepath.Join(dir, "state.db")); err == nil {
			t.Errorf("%v created a state database", args)
		}
	}
}

// Retention keeps exactly the keep newest automatic backups and leaves
// other files in the directory alone.
func TestBackupRetention(t *testing.T) {
	ctx := context.Background()
	state := t.TempDir()
	st, err := sqlitestore.Open(ctx, filepath.Join(state, "state.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	putBackupMachines(t, st, 3)
	dir := filepath.Join(state, "backups")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "state-manual.db")
	if err := os.WriteFile(other, []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	const keep = 3
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var written []string
	for i := range 6 {
		p, err := backupOnce(ctx, st, dir, keep, start.Add(time.Duration(i)*time.Hour), log)
		if err != nil {
			t.Fatal(err)
		}
		written = append(written, filepath.Base(p))
	}
	names, err := backupFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, written[len(written)-keep:]) {
		t.Errorf("kept %v, want the %d newest %v", names, keep, written[len(written)-keep:])
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("retention removed an unrelated file: %v", err)
	}
	if last, ok := newestBackup(dir); !ok || !last.Equal(start.Add(5*time.Hour)) {
		t.Errorf("newestBackup = %v, %v", last, ok)
	}
}

// The loop writes backups on its own and stop waits for it.
func TestStartBackupsWrites(t *testing.T) {
	ctx := context.Background()
	state := t.TempDir()
	st, err := sqlitestore.Open(ctx, filepath.Join(state, "state.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	dir := filepath.Join(state, "backups")
	stop := startBackups(ctx, st, dir, 50*time.Millisecond, 2, slog.New(slog.NewTextHandler(io.Discard, nil)))
	deadline := time.Now().Add(10 * time.Second)
	for {
		names, _ := backupFiles(dir)
		if len(names) > 0 {
			break
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatal("no automatic backup within 10s at a 50ms interval")
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
}

func TestConfigBackupEnv(t *testing.T) {
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	c, err := ConfigFromEnv(env(nil))
	if err != nil || c.BackupInterval != 6*time.Hour || c.BackupKeep != 8 {
		t.Errorf("defaults: %v %d, %v", c.BackupInterval, c.BackupKeep, err)
	}
	c, err = ConfigFromEnv(env(map[string]string{"BTY_BACKUP_INTERVAL": "0", "BTY_BACKUP_KEEP": "2"}))
	if err != nil || c.BackupInterval != 0 || c.BackupKeep != 2 {
		t.Errorf("0 and 2: %v %d, %v", c.BackupInterval, c.BackupKeep, err)
	}
	for k, v := range map[string]string{"BTY_BACKUP_INTERVAL": "10s", "BTY_BACKUP_KEEP": "0"} {
		if _, err := ConfigFromEnv(env(map[string]string{k: v})); err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%s: %v, want an error naming it", k, v, err)
		}
	}
	for _, v := range []string{"x", "-1h"} {
		if _, err := ConfigFromEnv(env(map[string]string{"BTY_BACKUP_INTERVAL": v})); err == nil {
			t.Errorf("BTY_BACKUP_INTERVAL=%s accepted", v)
		}
	}
}
