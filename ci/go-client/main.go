// go-client drives one nydusd (real or the mock) through nydus-snapshotter's own client
// (pkg/daemon/client.go), supervisor (pkg/supervisor) and command builder
// (pkg/daemon/command), unmodified, the way the snapshotter uses them: every client method,
// then a hot upgrade (states sent to the supervisor after each mount, a successor started
// with the builder's --upgrade command line, takeover, the old daemon's exit, start).
//
// It prints one JSON object per step: {"step": name, "ok": bool, "error": text, "value": ...},
// holding only what does not change between runs (no paths, pids or build information),
// so that two runs against two daemons can be compared line by line.
//
// Built in GOPATH mode against a local checkout of the snapshotter (nothing of it is in
// this repository); see harness/tests/go_client.rs, which builds and runs it.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/containerd/nydus-snapshotter/pkg/daemon"
	"github.com/containerd/nydus-snapshotter/pkg/daemon/command"
	"github.com/containerd/nydus-snapshotter/pkg/daemon/types"
	"github.com/containerd/nydus-snapshotter/pkg/supervisor"
)

type step struct {
	Step  string      `json:"step"`
	Ok    bool        `json:"ok"`
	Error string      `json:"error,omitempty"`
	Value interface{} `json:"value,omitempty"`
}

var out = json.NewEncoder(os.Stdout)

func record(name string, value interface{}, err error) {
	s := step{Step: name, Ok: err == nil, Value: value}
	if err != nil {
		s.Error = err.Error()
	}
	if e := out.Encode(s); e != nil {
		fmt.Fprintln(os.Stderr, e)
		os.Exit(2)
	}
}

// waitState polls until the daemon reports state, for at most ten seconds.
func waitState(c daemon.NydusdClient, state types.DaemonState) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := c.GetDaemonInfo()
		if err == nil && info.State == state {
			return nil
		}
		if time.Now().After(deadline) {
			last := "no reply"
			if info != nil {
				last = string(info.State)
			}
			return fmt.Errorf("not %s within 10s (last: %s, %v)", state, last, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func client(sock string) daemon.NydusdClient {
	c, err := daemon.NewNydusClient(sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	return c
}

// mountpoints lists the daemon's instances. The client's DaemonInfo has no
// backend_collection, so the reply is read here with the standard library.
func mountpoints(sock string) ([]string, error) {
	hc := http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}},
	}
	resp, err := hc.Get("http://unix/api/v1/daemon")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var info struct {
		Backends map[string]interface{} `json:"backend_collection"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		return nil, err
	}
	names := []string{}
	for name := range info.Backends {
		names = append(names, name)
	}
	sort.Strings(names)
	return names, nil
}

func main() {
	nydusd := flag.String("nydusd", "", "the daemon binary (nydusd_path)")
	root := flag.String("root", "", "a fresh directory for sockets, mounts and logs")
	images := flag.String("images", "", "directory holding v6.boot, v5.boot and blobs/")
	flag.Parse()

	id := "d1"
	mnt := filepath.Join(*root, "mnt")
	sock := filepath.Join(*root, "socket", id, "api.sock")
	for _, dir := range []string{mnt, filepath.Dir(sock), filepath.Join(*root, "cache"), filepath.Join(*root, "logs")} {
		if err := os.MkdirAll(dir, 0755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	supervisors, err := supervisor.NewSupervisorSet(filepath.Join(*root, "supervisor"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	su := supervisors.NewSupervisor(id)

	// The builder's command line for a shared FUSE daemon under the failover policy.
	build := func(apisock string, upgrade bool) []string {
		opts := []command.Opt{
			command.WithMode("fuse"), command.WithMountpoint(mnt),
			command.WithSupervisor(su.Sock()), command.WithID(id),
			command.WithLogLevel("info"), command.WithAPISock(apisock),
			command.WithLogFile(filepath.Join(*root, "logs", filepath.Base(apisock)+".log")),
			command.WithFailoverPolicy("resend"),
		}
		if upgrade {
			opts = append(opts, command.WithUpgrade())
		}
		args, err := command.BuildCommand(opts)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		return append(args, strings.Fields(os.Getenv("GO_CLIENT_DAEMON_ARGS"))...)
	}
	// start runs the daemon as the snapshotter's manager does (exec.Command, its env).
	start := func(args []string) *exec.Cmd {
		cmd := exec.Command(*nydusd, args...)
		cmd.Env = os.Environ()
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		return cmd
	}
	first := start(build(sock, false))
	defer func() { _ = first.Process.Kill(); _, _ = first.Process.Wait() }()
	c := client(sock)
	record("start_running", nil, waitState(c, types.DaemonStateRunning))

	info, err := c.GetDaemonInfo()
	var state interface{}
	if info != nil {
		state = info.State
	}
	record("get_daemon_info", state, err)

	config := func(blobs string) string {
		b, _ := json.Marshal(map[string]interface{}{
			"device": map[string]interface{}{
				"backend": map[string]interface{}{"type": "localfs", "config": map[string]string{"dir": filepath.Join(*images, blobs)}},
				"cache":   map[string]interface{}{"type": "blobcache", "config": map[string]string{"work_dir": filepath.Join(*root, "cache")}},
			},
			"mode": "direct",
		})
		return string(b)
	}
	boot6 := filepath.Join(*images, "v6.boot")
	// The snapshotter's FetchDaemonStates waits for the daemon's connection without a
	// deadline (its own FIXME); a daemon that answers sendfd without sending (nydusd 2.2's
	// stub) would hang it for ever, so the wait is bounded here.
	sendStates := func(name string) {
		done := make(chan error, 1)
		go func() { done <- su.FetchDaemonStates(func() error { return c.SendFd() }) }()
		select {
		case err := <-done:
			record(name, nil, err)
		case <-time.After(2 * time.Second):
			record(name, nil, fmt.Errorf("no state reached the supervisor within 2s"))
		}
	}
	record("mount_a", nil, c.Mount("/a", boot6, config("blobs")))
	sendStates("send_states_after_a")
	record("mount_b_v5", nil, c.Mount("/b", filepath.Join(*images, "v5.boot"), config("blobs")))
	sendStates("send_states_after_b")
	record("mount_again", nil, c.Mount("/a", boot6, config("blobs")))
	record("mount_config_not_json", nil, c.Mount("/x", boot6, "not json"))
	record("mount_unknown_backend", nil, c.Mount("/x", boot6, strings.Replace(config("blobs"), "localfs", "nope", 1)))
	record("mount_missing_bootstrap", nil, c.Mount("/x", filepath.Join(*images, "missing.boot"), config("blobs")))
	record("mount_not_a_bootstrap", nil, c.Mount("/x", filepath.Join(*images, "blobs"), config("blobs")))

	fs, err := c.GetFsMetrics("a")
	var fsID interface{}
	if fs != nil {
		fsID = fs.ID
	}
	record("get_fs_metrics_a", fsID, err)
	_, err = c.GetFsMetrics("")
	record("get_fs_metrics_all", nil, err)
	_, err = c.GetFsMetrics("nope")
	record("get_fs_metrics_unknown", nil, err)
	cache, err := c.GetCacheMetrics("")
	var files interface{}
	if cache != nil {
		f := append([]string(nil), cache.UnderlyingFiles...)
		sort.Strings(f)
		files = f
	}
	record("get_cache_metrics", files, err)
	_, err = c.GetCacheMetrics("a")
	record("get_cache_metrics_a", nil, err)
	inflight, err := c.GetInflightMetrics()
	var count interface{}
	if inflight != nil {
		count = len(inflight.Values)
	}
	record("get_inflight_metrics", count, err)
	record("update_config", nil, c.UpdateConfig("/a", map[string]string{"registry_auth": "dTpw"}))
	record("bind_blob_on_fuse", nil, c.BindBlob(`{"type":"bootstrap","id":"b","domain_id":"d","config":{}}`))
	record("unbind_blob_on_fuse", nil, c.UnbindBlob("d", "b"))
	record("umount_b", nil, c.Umount("/b"))
	record("umount_unknown", nil, c.Umount("/nope"))
	sendStates("send_states_after_umount")
	names, err := mountpoints(sock)
	record("mounts_before_upgrade", names, err)
	record("takeover_while_running", nil, c.TakeOver())
	record("start_while_running", nil, c.Start())

	// The snapshotter's hot upgrade (pkg/system/system.go, upgradeNydusDaemon).
	nextSock := filepath.Join(filepath.Dir(sock), "api1.sock")
	record("supervisor_send_states", nil, su.SendStatesTimeout(10*time.Second))
	next := start(build(nextSock, true))
	defer func() { _ = next.Process.Kill(); _, _ = next.Process.Wait() }()
	nc := client(nextSock)
	record("successor_init", nil, waitState(nc, types.DaemonStateInit))
	record("successor_takeover", nil, nc.TakeOver())
	record("successor_ready", nil, waitState(nc, types.DaemonStateReady))
	record("old_exit", nil, c.Exit())
	exited := make(chan error, 1)
	go func() { _, err := first.Process.Wait(); exited <- err }()
	select {
	case err := <-exited:
		record("old_exited", nil, err)
	case <-time.After(10 * time.Second):
		record("old_exited", nil, fmt.Errorf("still running after 10s"))
	}
	record("successor_start", nil, nc.Start())
	record("successor_running", nil, waitState(nc, types.DaemonStateRunning))
	names, err = mountpoints(nextSock)
	record("mounts_after_upgrade", names, err)
	record("successor_umount_a", nil, nc.Umount("/a"))
	record("successor_exit", nil, nc.Exit())
}
