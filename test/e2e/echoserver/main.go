// Command echoserver is a backend for moat's end-to-end tests that need more sockets than the test
// process may hold, or a host in a network namespace: it greets every connection with its address
// and the client's (as the target sees it) and echoes lines; over UDP it answers every datagram
// with the client's address. Its dial modes are clients.
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
	switch {
	case len(os.Args) >= 3 && os.Args[1] == "dial":
		dial(os.Args[2:])
		return
	case len(os.Args) >= 3 && os.Args[1] == "hold":
		hold(os.Args[2:])
		return
	case len(os.Args) == 3 && os.Args[1] == "get":
		get(os.Args[2])
		return
	case len(os.Args) >= 3 && os.Args[1] == "dial-udp":
		dialUDP(os.Args[2:])
		return
	case len(os.Args) == 3 && os.Args[1] == "udp":
		serveUDP(os.Args[2])
		return
	case len(os.Args) != 2:
		fmt.Fprintln(os.Stderr, "usage: echoserver <addr> | echoserver udp <addr> | echoserver dial|hold <addr> [source-ip [timeout]] | echoserver dial-udp <addr> [source-ip] | echoserver get <url>")
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
			fmt.Fprintf(c, "hello from %s, you are %s\n", ln.Addr(), c.RemoteAddr())
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

// dial connects to addr (from source-ip, if given), prints the greeting and a line "local
// <address>" (its own end) and exits 0, or prints the error and exits 1. Tests run it inside
// network namespaces as a client host.
func dial(args []string) {
	c, err := connect(args)
	if err == nil {
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		var line string
		line, err = bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err == nil {
			fmt.Print(line, "local ", c.LocalAddr(), "\n")
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

// serveUDP answers every datagram with "you are <client address>".
func serveUDP(addr string) {
	c, err := net.ListenPacket("udp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(c.LocalAddr())
	buf := make([]byte, 65535)
	for {
		_, from, err := c.ReadFrom(buf)
		if err != nil {
			fmt.Fprintln(os.Stderr, "echoserver:", err)
			os.Exit(1)
		}
		_, _ = c.WriteTo([]byte("you are "+from.String()+"\n"), from)
	}
}

// dialUDP sends a datagram to addr (from source-ip, if given), prints the answer and its own end
// as dial does and exits 0, or prints the error (no answer within a second: a timeout) and exits 1.
func dialUDP(args []string) {
	var laddr *net.UDPAddr
	if len(args) > 1 {
		laddr = &net.UDPAddr{IP: net.ParseIP(args[1])}
	}
	raddr, err := net.ResolveUDPAddr("udp", args[0])
	if err == nil {
		var c *net.UDPConn
		if c, err = net.DialUDP("udp", laddr, raddr); err == nil {
			_ = c.SetDeadline(time.Now().Add(time.Second))
			buf := make([]byte, 1500)
			var n int
			if _, err = c.Write([]byte("ping")); err == nil {
				n, err = c.Read(buf)
			}
			c.Close()
			if err == nil {
				fmt.Print(string(buf[:n]), "local ", c.LocalAddr(), "\n")
				return
			}
		}
	}
	fmt.Println("error:", err)
	os.Exit(1)
}
