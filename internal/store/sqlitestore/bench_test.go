package sqlitestore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/store"
)

// benchMAC is the i-th of the benchmark's machines.
func benchMAC(i int) fleet.MAC {
	return fleet.MustParseMAC(fmt.Sprintf("02:00:00:%02x:%02x:%02x", (i>>16)&0xff, (i>>8)&0xff, i&0xff))
}

// seedMachines inserts n machines in one transaction, a third each on
// local, flash and tui.
func seedMachines(tb testing.TB, s *SQLite, n int) {
	tb.Helper()
	now := time.Now().UTC()
	policies := []fleet.Policy{fleet.PolicyLocal, fleet.PolicyFlash, fleet.PolicyTUI}
	err := s.write(context.Background(), func(ctx context.Context, tx dbtx) error {
		for i := range n {
			m := fleet.Machine{MAC: benchMAC(i), Image: "debian-13.qcow2", BootPolicy: policies[i%3],
				NextBoot: fleet.NextFlash, CreatedAt: now, UpdatedAt: now}
			if err := insertMachine(context.Background(), tx, m); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkPXEContact: PXE contacts from random known machines out of
// 10,000, from parallel goroutines (b.SetParallelism), reporting
// contacts/s and the latency percentiles of one call.
func BenchmarkPXEContact(b *testing.B) {
	const machines = 10000
	for _, par := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("goroutines=%dxGOMAXPROCS", par), func(b *testing.B) {
			s, err := Open(context.Background(), filepath.Join(b.TempDir(), "state.db"), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			seedMachines(b, s, machines)
			var (
				mu   sync.Mutex
				lats []time.Duration
			)
			b.SetParallelism(par)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				var local []time.Duration
				r := rand.New(rand.NewPCG(rand.Uint64(), 0))
				for pb.Next() {
					t0 := time.Now()
					if _, err := store.PXEContact(context.Background(), s, benchMAC(r.IntN(machines)), visit("10.0.0.1", t0)); err != nil {
						b.Error(err)
						return
					}
					local = append(local, time.Since(t0))
				}
				mu.Lock()
				lats = append(lats, local...)
				mu.Unlock()
			})
			elapsed := time.Since(start)
			b.StopTimer()
			slices.Sort(lats)
			pct := func(p float64) float64 {
				if len(lats) == 0 {
					return 0
				}
				return float64(lats[min(len(lats)-1, int(p*float64(len(lats))))]) / 1e6
			}
			b.ReportMetric(float64(len(lats))/elapsed.Seconds(), "contacts/s")
			b.ReportMetric(pct(0.50), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
		})
	}
}
