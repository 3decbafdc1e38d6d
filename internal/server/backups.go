package server

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"time"
)

// backuper is what the automatic backups need of the store
// (sqlitestore.SQLite).
type backuper interface {
	Backup(ctx context.Context, path string, overwrite bool) error
}

// backupName matches the automatic backups' names; retention deletes
// only these.
var backupName = regexp.MustCompile(`^state-\d{8}T\d{6}Z\.db$`)

const backupTimeFormat = "20060102T150405Z"

// startBackups writes a backup of st into dir every interval, keeping
// the keep newest, until the returned stop is called (it waits for a
// backup in progress). The first one is due one interval after the
// newest already in dir (at once when that is older), so restarts do
// not postpone backups forever. A failure is logged as a warning and
// retried at the next interval; the server goes on. interval 0 does
// nothing.
func startBackups(ctx context.Context, st backuper, dir string, interval time.Duration, keep int, log *slog.Logger) (stop func()) {
	if interval <= 0 || st == nil {
		log.Info("automatic backups off (BTY_BACKUP_INTERVAL=0)")
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		wait := interval
		if last, ok := newestBackup(dir); ok {
			wait = max(0, time.Until(last.Add(interval)))
		}
		log.Info("automatic backups on", "dir", dir, "interval", interval, "keep", keep, "next", time.Now().Add(wait).UTC().Format(time.RFC3339))
		t := time.NewTimer(wait)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			backupOnce(ctx, st, dir, keep, time.Now(), log)
			t.Reset(interval)
		}
	}()
	return func() {
		cancel()
		wg.Wait()
	}
}

// backupOnce writes dir/state-TIME.db and prunes dir to keep files.
func backupOnce(ctx context.Context, st backuper, dir string, keep int, now time.Time, log *slog.Logger) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		log.Warn("automatic backup failed", "dir", dir, "err", err)
		return "", err
	}
	path := filepath.Join(dir, "state-"+now.UTC().Format(backupTimeFormat)+".db")
	start := time.Now()
	if err := st.Backup(ctx, path, false); err != nil {
		if ctx.Err() == nil {
			log.Warn("automatic backup failed; the server goes on, the older backups are kept", "path", path, "err", err)
		}
		return "", err
	}
	var size int64
	if fi, err := os.Stat(path); err == nil {
		size = fi.Size()
	}
	log.Info("backup written", "path", path, "bytes", size, "took", time.Since(start).Round(time.Millisecond))
	if err := pruneBackups(dir, keep, log); err != nil {
		log.Warn("pruning old backups failed", "dir", dir, "err", err)
	}
	return path, nil
}

// backupFiles lists dir's automatic backups, oldest first (their names
// sort by time).
func backupFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() && backupName.MatchString(e.Name()) {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	return names, nil
}

func newestBackup(dir string) (time.Time, bool) {
	names, err := backupFiles(dir)
	if err != nil || len(names) == 0 {
		return time.Time{}, false
	}
	n := names[len(names)-1]
	t, err := time.Parse(backupTimeFormat, n[len("state-"):len(n)-len(".db")])
	return t, err == nil
}

// pruneBackups deletes all but the keep newest automatic backups in dir.
func pruneBackups(dir string, keep int, log *slog.Logger) error {
	names, err := backupFiles(dir)
	if err != nil {
		return err
	}
	var errs []error
	for len(names) > keep {
		p := filepath.Join(dir, names[0])
		if err := os.Remove(p); err != nil {
			errs = append(errs, err)
		} else {
			log.Info("old backup removed", "path", p)
		}
		names = names[1:]
	}
	if len(errs) > 0 {
		return fmt.Errorf("%v", errs)
	}
	return nil
}
