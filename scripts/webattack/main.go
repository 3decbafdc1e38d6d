// Command webattack is the attack load of make bench-web
// (scripts/bench-web.sh). It talks to a bty-web on loopback only.
//
//	webattack seed -url URL -password PW -machines 10000
//
// creates the machines 52:54:00:00:00:00 onward (PUT /machines/{mac},
// boot policy tui, as a discovered machine has) and exits.
//
//	webattack attack -url URL -password PW -duration 2m -ready-file F
//
// runs, until the duration ends or SIGINT/SIGTERM:
//   - slow bodies: -slow connections, spread -slow-per-addr to a source
//     address over 127.1.x.y, each sending the headers of POST
//     /pxe/{mac}/failed with a Content-Length of -slow-length and then
//     one byte every -slow-every; a connection the server ends is opened
//     again;
//   - wrong logins: -logins loops of POST /auth/login with a wrong
//     password, each from its own address 127.0.0.2 onward;
//   - idle SSE: one right login, then -sse streams of GET
//     /events/machines with the session cookie that are never read
//     past their response header, from 127.3.0.1;
//   - discovery flood: -discover loops of GET /pxe/{random MAC}, over
//     -discover-addrs source addresses 127.4.x.y.
//
// Once the slow connections and the streams are up (or after
// -ramp-timeout) it writes "ready" to -ready-file; at the end it prints
// its counts as key=value lines on stdout. Progress goes to stderr.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: webattack seed|attack [flags] (-h for the flags)")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "seed":
		err = seedMain(os.Args[2:])
	case "attack":
		err = attackMain(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q: want seed or attack", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "webattack:", err)
		os.Exit(1)
	}
}

// target checks that raw is an http URL on a loopback address and
// returns its host:port.
func target(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return "", fmt.Errorf("-url %q: want http://127.0.0.1:PORT", raw)
	}
	ip := net.ParseIP(u.Hostname())
	if ip == nil || !ip.IsLoopback() {
		return "", fmt.Errorf("-url %q: the attack load is for loopback only", raw)
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "80"), nil
	}
	return u.Host, nil
}

// loopIP is the k-th address of the loopback block 127.b.0.0/16,
// skipping .0 and .255 in the last byte: 127.b.0.1, ..., 127.b.0.254,
// 127.b.1.1, ...
func loopIP(b byte, k int) net.IP {
	return net.IPv4(127, b, byte(k/254), byte(1+k%254))
}

// client is an HTTP client whose connections come from local.
func client(local net.IP, conns int) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: local}, Timeout: 5 * time.Second}
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext:         d.DialContext,
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			MaxConnsPerHost:     conns,
			DisableCompression:  true,
			IdleConnTimeout:     30 * time.Second,
		},
	}
}

// login returns a session token for password.
func login(ctx context.Context, c *http.Client, base, password string) (string, error) {
	body, err := json.Marshal(map[string]string{"password": password})
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/auth/login", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := c.Do(req)
	if err != nil {
		return "", fmt.Errorf("login: %w", err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if err != nil {
		return "", fmt.Errorf("login: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("login: %s: %s", res.Status, strings.TrimSpace(string(b)))
	}
	var s struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(b, &s); err != nil || s.Token == "" {
		return "", fmt.Errorf("login: no token in %q", b)
	}
	return s.Token, nil
}

func benchMAC(i int) string {
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", (i>>16)&0xff, (i>>8)&0xff, i&0xff)
}

func seedMain(args []string) error {
	fs := flag.NewFlagSet("seed", flag.ContinueOnError)
	base := fs.String("url", "", "bty-web's URL, http://127.0.0.1:PORT")
	password := fs.String("password", "", "the admin password")
	machines := fs.Int("machines", 10000, "machines to create, 52:54:00:00:00:00 onward")
	workers := fs.Int("workers", 8, "requests at once")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, err := target(*base); err != nil {
		return err
	}
	if *machines < 1 || *machines > 1<<24 || *workers < 1 || *workers > 256 {
		return errors.New("-machines must be 1..16777216 and -workers 1..256")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c := client(net.IPv4(127, 0, 0, 1), *workers)
	tok, err := login(ctx, c, *base, *password)
	if err != nil {
		return err
	}
	next := make(chan int)
	errc := make(chan error, *workers)
	var wg sync.WaitGroup
	for range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := putMachine(ctx, c, *base, tok, benchMAC(i)); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	var ferr error
feed:
	for i := range *machines {
		select {
		case next <- i:
		case ferr = <-errc:
			break feed
		case <-ctx.Done():
			ferr = ctx.Err()
			break feed
		}
	}
	close(next)
	wg.Wait()
	if ferr == nil {
		select {
		case ferr = <-errc:
		default:
		}
	}
	return ferr
}

func putMachine(ctx context.Context, c *http.Client, base, tok, mac string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, base+"/machines/"+mac, strings.NewReader(`{"boot_policy":"tui"}`))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("PUT /machines/%s: %w", mac, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if res.StatusCode != http.StatusOK && res.StatusCode != http.StatusCreated {
		return fmt.Errorf("PUT /machines/%s: %s: %s", mac, res.Status, strings.TrimSpace(string(b)))
	}
	return nil
}

// codes counts HTTP status codes (and transport errors, as code 0).
type codes struct {
	mu sync.Mutex
	n  map[int]int64
}

func (c *codes) add(code int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[int]int64{}
	}
	c.n[code]++
}

func (c *codes) get(code int) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[code]
}

func (c *codes) total() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var t int64
	for _, v := range c.n {
		t += v
	}
	return t
}

// String is "401:12,429:3400,err:0" (codes in order).
func (c *codes) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := make([]int, 0, len(c.n))
	for k := range c.n {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	var parts []string
	for _, k := range keys {
		name := fmt.Sprint(k)
		if k == 0 {
			name = "err"
		}
		parts = append(parts, fmt.Sprintf("%s:%d", name, c.n[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}

type stats struct {
	slowHeld      atomic.Int64 // slow-body connections open now
	slowOpened    atomic.Int64 // slow-body connections whose headers were sent
	slowRefused   atomic.Int64 // closed by the server within 1 s, no response: a connection cap
	slowDialErr   atomic.Int64
	slowBytes     atomic.Int64 // body bytes trickled
	slowEnded     codes        // how the server ended slow connections: status, 0 = closed without one
	logins        codes
	sseConnected  atomic.Int64 // streams answered 200 and open now
	sseRefused    codes        // stream answers other than 200 (0: error)
	discover      codes
	slowHeldRange [2]atomic.Int64 // min, max of slowHeld once ready, sampled every 200 ms
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// slowLoop keeps one slow-body connection from local open until ctx
// ends, opening it again whenever the server ends it.
func slowLoop(ctx context.Context, st *stats, addr string, local net.IP, mac string, length int, every time.Duration) {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: local}, Timeout: 5 * time.Second}
	for ctx.Err() == nil {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			if ctx.Err() == nil {
				st.slowDialErr.Add(1)
			}
			sleepCtx(ctx, 500*time.Millisecond+rand.N(500*time.Millisecond))
			continue
		}
		slowConn(ctx, st, c, addr, mac, length, every)
		// Back off a little before the next connection: the server ended
		// this one (or refused it).
		sleepCtx(ctx, 100*time.Millisecond+rand.N(400*time.Millisecond))
	}
}

func slowConn(ctx context.Context, st *stats, c net.Conn, host, mac string, length int, every time.Duration) {
	defer c.Close()
	start := time.Now()
	hdr := fmt.Sprintf("POST /pxe/%s/failed HTTP/1.1\r\nHost: %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n", mac, host, length)
	if err := c.SetWriteDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return
	}
	if _, err := io.WriteString(c, hdr); err != nil {
		st.slowRefused.Add(1)
		return
	}
	st.slowOpened.Add(1)
	st.slowHeld.Add(1)
	defer st.slowHeld.Add(-1)
	// The reader sees the server's answer (or its close).
	ended := make(chan int, 1)
	go func() {
		br := bufio.NewReaderSize(c, 512)
		line, err := br.ReadString('\n')
		code := 0
		if err == nil {
			var proto string
			if _, serr := fmt.Sscanf(line, "%s %d", &proto, &code); serr != nil {
				code = 0
			}
		}
		ended <- code
	}()
	// Spread the trickles over the interval.
	first := time.NewTimer(rand.N(every) + time.Millisecond)
	defer first.Stop()
	var tick <-chan time.Time
	sent := 0
	for {
		select {
		case <-ctx.Done():
			c.Close()
			<-ended
			return
		case code := <-ended:
			if code == 0 && time.Since(start) < time.Second {
				st.slowRefused.Add(1)
			} else {
				st.slowEnded.add(code)
			}
			return
		case <-first.C:
			t := time.NewTicker(every)
			defer t.Stop()
			tick = t.C
			if !trickle(c, &sent, length, st) {
				c.Close()
			}
		case <-tick:
			if !trickle(c, &sent, length, st) {
				c.Close()
			}
		}
	}
}

// trickle sends one byte of the body, while the body is not complete.
func trickle(c net.Conn, sent *int, length int, st *stats) bool {
	if *sent >= length-1 {
		return true // never complete the body
	}
	if err := c.SetWriteDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return false
	}
	if _, err := c.Write([]byte{'x'}); err != nil {
		return false
	}
	*sent++
	st.slowBytes.Add(1)
	return true
}

// loginLoop posts wrong passwords from its own address until ctx ends.
func loginLoop(ctx context.Context, st *stats, base string, local net.IP, id int, pause time.Duration) {
	c := client(local, 1)
	defer c.CloseIdleConnections()
	for n := 0; ctx.Err() == nil; n++ {
		body := fmt.Sprintf(`{"password":"wrong-%d-%d"}`, id, n)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/auth/login", strings.NewReader(body))
		if err != nil {
			st.logins.add(0)
			return
		}
		req.Header.Set("Content-Type", "application/json")
		res, err := c.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				st.logins.add(0)
				sleepCtx(ctx, 100*time.Millisecond)
			}
			continue
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
		res.Body.Close()
		st.logins.add(res.StatusCode)
		if pause > 0 {
			sleepCtx(ctx, pause)
		}
	}
}

// sseLoop holds one stream of GET /events/machines open without reading
// it past the response header, opening it again if it fails.
func sseLoop(ctx context.Context, st *stats, addr string, local net.IP, token string) {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: local}, Timeout: 5 * time.Second}
	for ctx.Err() == nil {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			if ctx.Err() == nil {
				st.sseRefused.add(0)
			}
			sleepCtx(ctx, time.Second)
			continue
		}
		code := sseOpen(c, addr, token)
		if code != http.StatusOK {
			c.Close()
			st.sseRefused.add(code)
			sleepCtx(ctx, time.Second)
			continue
		}
		st.sseConnected.Add(1)
		<-ctx.Done()
		c.Close()
		st.sseConnected.Add(-1)
	}
}

// sseOpen sends the request and reads the status line only (a 512-byte
// read, the headers and perhaps a little of the snapshot).
func sseOpen(c net.Conn, host, token string) int {
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return 0
	}
	req := fmt.Sprintf("GET /events/machines HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\nCookie: bty-token=%s\r\n\r\n", host, token)
	if _, err := io.WriteString(c, req); err != nil {
		return 0
	}
	line, err := bufio.NewReaderSize(c, 512).ReadString('\n')
	if err != nil {
		return 0
	}
	var proto string
	var code int
	if _, err := fmt.Sscanf(line, "%s %d", &proto, &code); err != nil {
		return 0
	}
	if err := c.SetDeadline(time.Time{}); err != nil {
		return 0
	}
	return code
}

// discoverLoop asks for random unknown MACs, over its clients in turn.
func discoverLoop(ctx context.Context, st *stats, base string, clients []*http.Client) {
	for i := 0; ctx.Err() == nil; i++ {
		c := clients[i%len(clients)]
		mac := fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", rand.N(256), rand.N(256), rand.N(256), rand.N(256), rand.N(256))
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/pxe/"+mac, nil)
		if err != nil {
			st.discover.add(0)
			return
		}
		res, err := c.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				st.discover.add(0)
				sleepCtx(ctx, 100*time.Millisecond)
			}
			continue
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
		res.Body.Close()
		st.discover.add(res.StatusCode)
	}
}

func attackMain(args []string) error {
	fs := flag.NewFlagSet("attack", flag.ContinueOnError)
	base := fs.String("url", "", "bty-web's URL, http://127.0.0.1:PORT")
	password := fs.String("password", "", "the right admin password (one login, for the SSE streams' cookie)")
	duration := fs.Duration("duration", 2*time.Minute, "longest run (SIGINT or SIGTERM ends it sooner)")
	readyFile := fs.String("ready-file", "", `file to write "ready" to once the load is up`)
	rampTimeout := fs.Duration("ramp-timeout", 20*time.Second, "longest wait for the slow connections and streams before ready")
	machines := fs.Int("machines", 10000, "known machines (52:54:00:...) whose /failed the slow bodies post to")
	slow := fs.Int("slow", 2000, "slow-body connections")
	slowPerAddr := fs.Int("slow-per-addr", 100, "slow-body connections per source address (127.1.x.y); bty-web refuses more than BTY_MAX_CONNS_PER_ADDR (256)")
	slowLength := fs.Int("slow-length", 16000, "Content-Length the slow bodies announce")
	slowEvery := fs.Duration("slow-every", 5*time.Second, "one body byte per this, per slow connection")
	logins := fs.Int("logins", 48, "wrong-login loops, one per source address 127.0.0.2 onward")
	loginPause := fs.Duration("login-pause", 20*time.Millisecond, "pause between one loop's login attempts")
	sse := fs.Int("sse", 100, "idle SSE streams (GET /events/machines, never read), from 127.3.0.1")
	discover := fs.Int("discover", 8, "discovery flood loops (GET /pxe/{random MAC})")
	discoverAddrs := fs.Int("discover-addrs", 512, "source addresses of the discovery flood (127.4.x.y)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	addr, err := target(*base)
	if err != nil {
		return err
	}
	switch {
	case *slow < 0 || *slow > 20000, *slowPerAddr < 1, *slow/(*slowPerAddr) > 60000:
		return errors.New("-slow must be 0..20000, -slow-per-addr at least 1")
	case *slowLength < 2 || *slowEvery < 10*time.Millisecond:
		return errors.New("-slow-length must be at least 2 and -slow-every at least 10ms")
	case *logins < 0 || *logins > 253:
		return errors.New("-logins must be 0..253 (127.0.0.2 to 127.0.0.254)")
	case *sse < 0 || *sse > 10000:
		return errors.New("-sse must be 0..10000")
	case *discover < 0 || *discover > 1000 || *discoverAddrs < 1 || *discoverAddrs > 60000:
		return errors.New("-discover must be 0..1000 and -discover-addrs 1..60000")
	case *machines < 1 || *machines > 1<<24:
		return errors.New("-machines must be 1..16777216")
	case *duration <= 0:
		return errors.New("-duration must be positive")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *duration)
	defer cancel()

	st := &stats{}
	var wg sync.WaitGroup
	goRun := func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
	}

	// The SSE streams' session first, before the wrong logins start (they
	// come from other addresses anyway: the limit is per address).
	var token string
	if *sse > 0 {
		c := client(net.IPv4(127, 0, 0, 1), 1)
		token, err = login(ctx, c, *base, *password)
		c.CloseIdleConnections()
		if err != nil {
			return err
		}
	}
	for i := range *slow {
		goRun(func() {
			slowLoop(ctx, st, addr, loopIP(1, i / *slowPerAddr), benchMAC(i%*machines), *slowLength, *slowEvery)
		})
	}
	for range *sse {
		goRun(func() { sseLoop(ctx, st, addr, net.IPv4(127, 3, 0, 1), token) })
	}
	for i := range *logins {
		goRun(func() { loginLoop(ctx, st, *base, net.IPv4(127, 0, 0, byte(2+i)), i, *loginPause) })
	}
	if *discover > 0 {
		clients := make([]*http.Client, *discoverAddrs)
		for k := range clients {
			clients[k] = client(loopIP(4, k), 1)
		}
		for w := range *discover {
			var mine []*http.Client
			for k := w; k < len(clients); k += *discover {
				mine = append(mine, clients[k])
			}
			if len(mine) == 0 {
				mine = clients[w%len(clients) : w%len(clients)+1]
			}
			goRun(func() { discoverLoop(ctx, st, *base, mine) })
		}
		defer func() {
			for _, c := range clients {
				c.CloseIdleConnections()
			}
		}()
	}

	// Ready once the slow connections (95 %) and every stream are up.
	rampEnd := time.Now().Add(*rampTimeout)
	for ctx.Err() == nil && time.Now().Before(rampEnd) &&
		(st.slowHeld.Load() < int64(*slow)*95/100 || st.sseConnected.Load() < int64(*sse)) {
		sleepCtx(ctx, 200*time.Millisecond)
	}
	ramped := time.Now().Before(rampEnd)
	if ctx.Err() != nil {
		wg.Wait()
		return fmt.Errorf("ended during the ramp: %w", context.Cause(ctx))
	}
	fmt.Fprintf(os.Stderr, "[webattack] ready (load up: %v): slow held %d/%d, sse %d/%d, logins %s, discovery %s\n",
		ramped, st.slowHeld.Load(), *slow, st.sseConnected.Load(), *sse, &st.logins, &st.discover)
	if *readyFile != "" {
		if err := os.WriteFile(*readyFile, []byte("ready\n"), 0o644); err != nil {
			cancel()
			wg.Wait()
			return err
		}
	}
	readyAt := time.Now()
	st.slowHeldRange[0].Store(st.slowHeld.Load())
	st.slowHeldRange[1].Store(st.slowHeld.Load())
	loginsAtReady, discoverAtReady := st.logins.total(), st.discover.total()
	heldAtEnd := st.slowHeld.Load()
	sample := time.NewTicker(200 * time.Millisecond)
	progress := time.NewTicker(5 * time.Second)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-sample.C:
			h := st.slowHeld.Load()
			heldAtEnd = h
			if h < st.slowHeldRange[0].Load() {
				st.slowHeldRange[0].Store(h)
			}
			if h > st.slowHeldRange[1].Load() {
				st.slowHeldRange[1].Store(h)
			}
		case <-progress.C:
			fmt.Fprintf(os.Stderr, "[webattack] %4.0fs: slow held %d (refused %d, ended by server %s), sse %d, logins %s, discovery %s\n",
				time.Since(readyAt).Seconds(), st.slowHeld.Load(), st.slowRefused.Load(), &st.slowEnded,
				st.sseConnected.Load(), &st.logins, &st.discover)
		}
	}
	sample.Stop()
	progress.Stop()
	secs := time.Since(readyAt).Seconds()
	// Counts at the end, before the connections are closed (heldAtEnd:
	// the last sample).
	sseAtEnd := st.sseConnected.Load()
	cancel()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		fmt.Fprintln(os.Stderr, "[webattack] warning: some loops did not end within 15 s")
	}
	rate := func(n int64) float64 {
		if secs <= 0 {
			return 0
		}
		return float64(n) / secs
	}
	fmt.Printf("ramped=%v\n", ramped)
	fmt.Printf("attack_seconds=%.1f\n", secs)
	fmt.Printf("slow_target=%d\n", *slow)
	fmt.Printf("slow_source_addrs=%d\n", (*slow+*slowPerAddr-1) / *slowPerAddr)
	fmt.Printf("slow_held_end=%d\n", heldAtEnd)
	fmt.Printf("slow_held_min=%d\n", st.slowHeldRange[0].Load())
	fmt.Printf("slow_held_max=%d\n", st.slowHeldRange[1].Load())
	fmt.Printf("slow_opened=%d\n", st.slowOpened.Load())
	fmt.Printf("slow_refused=%d\n", st.slowRefused.Load())
	fmt.Printf("slow_dial_errors=%d\n", st.slowDialErr.Load())
	fmt.Printf("slow_ended_by_server=%s\n", &st.slowEnded)
	fmt.Printf("slow_body_bytes=%d\n", st.slowBytes.Load())
	fmt.Printf("sse_target=%d\n", *sse)
	fmt.Printf("sse_connected_end=%d\n", sseAtEnd)
	fmt.Printf("sse_refused=%s\n", &st.sseRefused)
	fmt.Printf("logins=%s\n", &st.logins)
	fmt.Printf("logins_429=%d\n", st.logins.get(http.StatusTooManyRequests))
	fmt.Printf("logins_401=%d\n", st.logins.get(http.StatusUnauthorized))
	fmt.Printf("logins_per_s=%.0f\n", rate(st.logins.total()-loginsAtReady))
	fmt.Printf("discover=%s\n", &st.discover)
	fmt.Printf("discover_per_s=%.0f\n", rate(st.discover.total()-discoverAtReady))
	return nil
}
