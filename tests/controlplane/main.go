// Command ferrolb-controlplane is the lab's Kubernetes control plane: an embedded
// etcd plus the real kube-apiserver, kube-controller-manager and kube-scheduler
// from k8s.io/kubernetes, in one binary.
//
// `ferrolb-controlplane up --dir DIR` writes a PKI and kubeconfigs under DIR,
// runs etcd in-process and each Kubernetes component as a child process of this
// same binary (`ferrolb-controlplane kube-apiserver ...` and so on), and stops
// them all on SIGTERM. Children are separate processes because the components
// register process-global flags and metrics and were never meant to share one.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/component-base/cli"
	kubectl "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	kcm "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	// Called through a symlink named kubectl, it is kubectl at the control
	// plane's own version: the lab needs no kubectl from elsewhere.
	if filepath.Base(os.Args[0]) == "kubectl" {
		runKubectl(os.Args[1:])
	}
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "kube-apiserver":
		runComponent(apiserver.NewAPIServerCommand())
	case "kube-controller-manager":
		runComponent(kcm.NewControllerManagerCommand())
	case "kube-scheduler":
		runComponent(scheduler.NewSchedulerCommand())
	case "kubectl":
		runKubectl(os.Args[2:])
	case "up":
		if err := up(os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "ferrolb-controlplane: %v\n", err)
			os.Exit(1)
		}
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: ferrolb-controlplane up --dir DIR [--bind-address IP] [--port N]")
	fmt.Fprintln(os.Stderr, "       ferrolb-controlplane kube-apiserver|kube-controller-manager|kube-scheduler [flags]")
	fmt.Fprintln(os.Stderr, "       ferrolb-controlplane kubectl [args] (or through a symlink named kubectl)")
	os.Exit(2)
}

func runKubectl(args []string) {
	os.Args = append([]string{"kubectl"}, args...)
	command := kubectl.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		kubectlutil.CheckErr(err)
	}
	os.Exit(0)
}

type cobraLike interface {
	SetArgs([]string)
	Execute() error
}

func runComponent(cmd cobraLike) {
	cmd.SetArgs(os.Args[2:])
	if err := cmd.Execute(); err != nil {
		os.Exit(1)
	}
	os.Exit(0)
}

type options struct {
	dir          string
	bindAddress  string
	port         int
	etcdPort     int
	serviceCIDRs string
	clusterCIDRs string
}

func up(args []string) error {
	var o options
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	fs.StringVar(&o.dir, "dir", "", "state directory (PKI, kubeconfigs, etcd data, logs)")
	fs.StringVar(&o.bindAddress, "bind-address", "127.0.0.1", "address kube-apiserver listens on and advertises; when it is not loopback, 127.0.0.1:PORT is forwarded to it")
	fs.IntVar(&o.port, "port", 6443, "kube-apiserver secure port")
	fs.IntVar(&o.etcdPort, "etcd-port", 23790, "embedded etcd client port on 127.0.0.1")
	fs.StringVar(&o.serviceCIDRs, "service-cidrs", "198.19.128.0/17,2001:db8:5::/112", "Service ClusterIP ranges (IPv4,IPv6)")
	fs.StringVar(&o.clusterCIDRs, "cluster-cidrs", "198.18.0.0/16,2001:db8:1::/48", "pod CIDRs the node IPAM allocates per-node /24 and /64 ranges from")
	_ = fs.Parse(args)
	if o.dir == "" {
		return errors.New("--dir is required")
	}
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return err
	}
	o.dir = dir
	for _, d := range []string{"pki", "logs", "etcd"} {
		if err := os.MkdirAll(filepath.Join(o.dir, d), 0o700); err != nil {
			return err
		}
	}
	bind := net.ParseIP(o.bindAddress)
	if bind == nil {
		return fmt.Errorf("--bind-address %q is not an IP address", o.bindAddress)
	}
	if err := writePKI(o.dir, bind, o.port); err != nil {
		return fmt.Errorf("writing PKI: %w", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	etcd, err := startEtcd(o)
	if err != nil {
		return fmt.Errorf("starting etcd: %w", err)
	}
	defer etcd.Close()
	logf("etcd ready on 127.0.0.1:%d", o.etcdPort)

	if !bind.IsLoopback() {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", o.port))
		if err != nil {
			return fmt.Errorf("loopback forwarder: %w", err)
		}
		defer ln.Close()
		go forward(ln, net.JoinHostPort(o.bindAddress, fmt.Sprint(o.port)))
	}

	sup := &supervisor{dir: o.dir, failed: make(chan error, 3)}
	defer sup.stopAll()

	pki := func(name string) string { return filepath.Join(o.dir, "pki", name) }
	if err := sup.start("kube-apiserver",
		"--etcd-servers="+fmt.Sprintf("http://127.0.0.1:%d", o.etcdPort),
		"--bind-address="+o.bindAddress,
		"--advertise-address="+o.bindAddress,
		fmt.Sprintf("--secure-port=%d", o.port),
		"--tls-cert-file="+pki("apiserver.crt"),
		"--tls-private-key-file="+pki("apiserver.key"),
		"--client-ca-file="+pki("ca.crt"),
		"--kubelet-client-certificate="+pki("apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+pki("apiserver-kubelet-client.key"),
		"--service-cluster-ip-range="+o.serviceCIDRs,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+pki("sa.pub"),
		"--service-account-signing-key-file="+pki("sa.key"),
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--profiling=false",
		"--endpoint-reconciler-type=lease",
		"--v=1",
	); err != nil {
		return err
	}
	readyURL := fmt.Sprintf("https://%s/readyz", net.JoinHostPort(o.bindAddress, fmt.Sprint(o.port)))
	if err := waitReady(ctx, sup, readyURL, o.dir, 120*time.Second); err != nil {
		return fmt.Errorf("kube-apiserver did not become ready (see %s): %w", filepath.Join(o.dir, "logs", "kube-apiserver.log"), err)
	}
	logf("kube-apiserver ready on %s", net.JoinHostPort(o.bindAddress, fmt.Sprint(o.port)))

	if err := sup.start("kube-controller-manager",
		"--kubeconfig="+filepath.Join(o.dir, "controller-manager.kubeconfig"),
		"--authentication-kubeconfig="+filepath.Join(o.dir, "controller-manager.kubeconfig"),
		"--authorization-kubeconfig="+filepath.Join(o.dir, "controller-manager.kubeconfig"),
		"--bind-address=127.0.0.1",
		"--secure-port=10257",
		"--leader-elect=false",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file="+pki("sa.key"),
		"--root-ca-file="+pki("ca.crt"),
		"--cluster-signing-cert-file="+pki("ca.crt"),
		"--cluster-signing-key-file="+pki("ca.key"),
		"--allocate-node-cidrs=true",
		"--cluster-cidr="+o.clusterCIDRs,
		"--node-cidr-mask-size-ipv4=24",
		"--node-cidr-mask-size-ipv6=64",
		"--service-cluster-ip-range="+o.serviceCIDRs,
		"--controllers=*,-cloud-node-lifecycle-controller,-service-lb-controller,-node-route-controller",
		"--v=1",
	); err != nil {
		return err
	}
	if err := sup.start("kube-scheduler",
		"--kubeconfig="+filepath.Join(o.dir, "scheduler.kubeconfig"),
		"--authentication-kubeconfig="+filepath.Join(o.dir, "scheduler.kubeconfig"),
		"--authorization-kubeconfig="+filepath.Join(o.dir, "scheduler.kubeconfig"),
		"--bind-address=127.0.0.1",
		"--secure-port=10259",
		"--leader-elect=false",
		"--v=1",
	); err != nil {
		return err
	}
	for name, u := range map[string]string{
		"kube-controller-manager": "https://127.0.0.1:10257/healthz",
		"kube-scheduler":          "https://127.0.0.1:10259/healthz",
	} {
		if err := waitReady(ctx, sup, u, o.dir, 60*time.Second); err != nil {
			return fmt.Errorf("%s did not become healthy (see %s): %w", name, filepath.Join(o.dir, "logs", name+".log"), err)
		}
	}
	// The ready file is what `cargo xtask controlplane up` waits for: all three
	// components are running and the API server answers /readyz.
	if err := os.WriteFile(filepath.Join(o.dir, "ready"), []byte(fmt.Sprint(os.Getpid())), 0o600); err != nil {
		return err
	}
	logf("control plane ready; admin kubeconfig %s", filepath.Join(o.dir, "admin.kubeconfig"))
	defer os.Remove(filepath.Join(o.dir, "ready"))

	select {
	case <-ctx.Done():
		logf("stopping")
		return nil
	case err := <-sup.failed:
		return err
	case err := <-etcd.Err():
		return fmt.Errorf("etcd failed: %w", err)
	}
}

func startEtcd(o options) (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Name = "ferrolb-lab"
	cfg.Dir = filepath.Join(o.dir, "etcd")
	client, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", o.etcdPort))
	peer, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", o.etcdPort+10))
	cfg.ListenClientUrls = []url.URL{*client}
	cfg.AdvertiseClientUrls = []url.URL{*client}
	cfg.ListenPeerUrls = []url.URL{*peer}
	cfg.AdvertisePeerUrls = []url.URL{*peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.Logger = "zap"
	cfg.LogLevel = "warn"
	cfg.LogOutputs = []string{filepath.Join(o.dir, "logs", "etcd.log")}
	// A lab cluster is thrown away often; a small quota and periodic
	// compaction keep the data directory from growing across long runs.
	cfg.QuotaBackendBytes = 2 << 30
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "5m"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, errors.New("etcd not ready after 60s")
	}
}

type supervisor struct {
	dir    string
	mu     sync.Mutex
	cmds   []*exec.Cmd
	failed chan error
	done   bool
}

func (s *supervisor) start(name string, args ...string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logPath := filepath.Join(s.dir, "logs", name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(self, append([]string{name}, args...)...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// The children die with us even if we are SIGKILLed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("starting %s: %w", name, err)
	}
	s.mu.Lock()
	s.cmds = append(s.cmds, cmd)
	s.mu.Unlock()
	logf("%s started (pid %d, log %s)", name, cmd.Process.Pid, logPath)
	go func() {
		err := cmd.Wait()
		logFile.Close()
		s.mu.Lock()
		done := s.done
		s.mu.Unlock()
		if !done {
			s.failed <- fmt.Errorf("%s exited: %v (see %s)", name, err, logPath)
		}
	}()
	return nil
}

// stopAll stops the components in reverse start order, so the API server is
// the last to go and the others shut down cleanly against it.
func (s *supervisor) stopAll() {
	s.mu.Lock()
	s.done = true
	cmds := append([]*exec.Cmd(nil), s.cmds...)
	s.mu.Unlock()
	for i := len(cmds) - 1; i >= 0; i-- {
		c := cmds[i]
		_ = c.Process.Signal(syscall.SIGTERM)
		exited := make(chan struct{})
		go func() {
			for {
				if err := c.Process.Signal(syscall.Signal(0)); err != nil {
					close(exited)
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = c.Process.Kill()
		}
	}
}

func waitReady(ctx context.Context, sup *supervisor, readyURL, dir string, timeout time.Duration) error {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "pki", "admin.crt"), filepath.Join(dir, "pki", "admin.key"))
	if err != nil {
		return err
	}
	pool, err := loadPool(filepath.Join(dir, "pki", "ca.crt"))
	if err != nil {
		return err
	}
	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs:      pool,
			Certificates: []tls.Certificate{cert},
			// kube-controller-manager and kube-scheduler serve /healthz on
			// loopback with a self-signed certificate they make at start.
			InsecureSkipVerify: strings.HasPrefix(readyURL, "https://127.0.0.1:1025"),
		}},
	}
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-sup.failed:
			return err
		default:
		}
		resp, err := client.Get(readyURL)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
		} else {
			last = err.Error()
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("timed out after %s, last answer: %s", timeout, last)
}

// forward copies TCP connections from ln to target, so clients on the host can
// use 127.0.0.1 while the API server itself listens on the lab's management address.
func forward(ln net.Listener, target string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			u, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				return
			}
			defer u.Close()
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(u, c); done <- struct{}{} }()
			go func() { _, _ = io.Copy(c, u); done <- struct{}{} }()
			<-done
		}()
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s ferrolb-controlplane: %s\n", time.Now().Format(time.RFC3339), fmt.Sprintf(format, args...))
}
