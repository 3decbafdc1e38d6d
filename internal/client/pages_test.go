package client_test

import (
	"fmt"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/client"
	"github.com/btyproject/bty/internal/client/clienttest"
	"github.com/btyproject/bty/internal/fleet"
)

// countingTransport counts requests and runs between after each answer.
type countingTransport struct {
	n       atomic.Int32
	between func(n int32)
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	n := c.n.Add(1)
	if c.between != nil {
		c.between(n)
	}
	return resp, err
}

// TestMachinesFollowsPages: with more machines than one page, Machines
// follows the server's Link rel="next" to the end and returns every
// machine once, in MAC order, even when a machine that sorts before the
// current page is added between two pages (an offset would then repeat
// one).
func TestMachinesFollowsPages(t *testing.T) {
	t.Parallel()
	ts := clienttest.Start(t, nil)
	now := time.Now().UTC()
	var ms []fleet.Machine
	for i := range 25 {
		ms = append(ms, fleet.Machine{MAC: fleet.MustParseMAC(fmt.Sprintf("02:00:00:00:01:%02x", i)), BootPolicy: fleet.PolicyLocal,
			NextBoot: fleet.NextFlash, CreatedAt: now, UpdatedAt: now})
	}
	if err := ts.Store.ImportMachines(ctx(t), ms); err != nil {
		t.Fatal(err)
	}
	tr := &countingTransport{}
	c, err := client.New(ts.URL, client.WithHTTPClient(&http.Client{Transport: tr}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Login(ctx(t), clienttest.Password); err != nil {
		t.Fatal(err)
	}
	early := fleet.MustParseMAC("02:00:00:00:00:01")
	tr.between = func(n int32) {
		if n == 3 { // the login, then the first page
			if err := ts.Store.ImportMachines(ctx(t), []fleet.Machine{{MAC: early, BootPolicy: fleet.PolicyLocal,
				NextBoot: fleet.NextFlash, CreatedAt: now, UpdatedAt: now}}); err != nil {
				t.Error(err)
			}
		}
	}
	tr.n.Store(1)
	client.SetMachinesPage(c, 4)
	got, err := c.Machines(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	var macs []string
	for _, m := range got {
		macs = append(macs, m.MAC.String())
	}
	var want []string
	for _, m := range ms {
		want = append(want, m.MAC.String())
	}
	if !slices.Equal(macs, want) {
		t.Errorf("Machines over pages of 4 = %v\nwant %v", macs, want)
	}
	if n := tr.n.Load() - 1; n != 7 {
		t.Errorf("%d requests for 25 machines in pages of 4, want 7", n)
	}
	// The next listing sees the added machine too.
	if got, err := c.Machines(ctx(t)); err != nil || len(got) != 26 || got[0].MAC != early {
		t.Errorf("second listing: %d machines, %v", len(got), err)
	}
}
