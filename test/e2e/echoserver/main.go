// Command echoserver is a backend for moat's end-to-end tests that need more sockets than the test
// process may hold: it greets every connection with its address and echoes lines.
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) >= 3 {
		switch os.Args[1] {
		case "dial":
			dial(os.Args[2:])
			return
		case "hold":
			hold(os.Args[2:])
			return
		case "get":
			get(os.Args[2])
			return
		}
	}
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: echoserver <addr> | echoserver dial|hold <addr> [source-ip [timeout]] | echoserver get <url>")
		os.Exit(2)
	}
	// Hold as many connections as the hard limit allows: the soft limit a child inherits can be
	// lower.
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err == nil {
		lim.Cur = lim.Max
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	}
	ln, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "echoserver:", err)
			os.Exit(1)
		}
		go func() {
			defer c.Close()
			fmt.Fprintf(c, "hello from %s\n", ln.Addr())
			// A plain buffer, not io.Copy: splicing a socket to itself holds a pipe (two more
			// descriptors) for as long as the connection waits for data.
			buf := make([]byte, 4096)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

// dial connects to addr (from source-ip, if given), prints the greeting and exits 0, or prints
// the error and exits 1. Tests run it inside network namespaces as a client host.
func dial(args []string) {
	c, err := connect(args)
	if err == nil {
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		var line string
		line, err = bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err == nil {
			fmt.Print(line)
			return
		}
	}
	fmt.Println("error:", err)
	os.Exit(1)
}

// connect dials args[0] from args[1] (optional) within args[2] (optional, default 1 s).
func connect(args []string) (net.Conn, error) {
	d := net.Dialer{Timeout: time.Second}
	if len(args) > 1 {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(args[1])}
	}
	if len(args) > 2 {
		timeout, err := time.ParseDuration(args[2])
		if err != nil {
			return nil, err
		}
		d.Timeout = timeout
	}
	return d.Dial("tcp", args[0])
}

// hold connects as dial does, prints the greeting, then sends each line of its standard input
// and prints the echo (each within 2 s), so that a test can keep one flow open across rule
// changes. It exits 1 at the first error, which it prints.
func hold(args []string) {
	c, err := connect(args)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	r := bufio.NewReader(c)
	in := bufio.NewScanner(os.Stdin)
	for first := true; first || in.Scan(); first = false {
		if !first {
			if _, err := fmt.Fprintln(c, in.Text()); err != nil {
				fmt.Println("error:", err)
				os.Exit(1)
			}
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		line, err := r.ReadString('\n')
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Print(line)
	}
}

// get prints the body of an HTTP GET, for tests that read a server inside a namespace.
func get(url string) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err == nil {
		defer resp.Body.Close()
		_, err = io.Copy(os.Stdout, resp.Body)
	}
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
}
