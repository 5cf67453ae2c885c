package secgroup

import "testing"

func TestParseProtocol(t *testing.T) {
	tests := []struct {
		in      string
		want    int
		wantErr bool
	}{
		{in: "tcp", want: ProtocolTCP},
		{in: "TCP", want: ProtocolTCP},
		{in: "6", want: ProtocolTCP},
		{in: "udp", want: ProtocolUDP},
		{in: "Udp", want: ProtocolUDP},
		{in: "17", want: ProtocolUDP},
		{in: "icmp", want: ProtocolICMP},
		{in: "1", want: ProtocolICMP},
		{in: "icmpv6", want: ProtocolICMPv6},
		{in: "ICMPv6", want: ProtocolICMPv6},
		{in: "58", want: ProtocolICMPv6},
		{in: "-1", want: ProtocolAll},
		{in: "all", want: ProtocolAll},
		{in: "ALL", want: ProtocolAll},
		{in: "0", want: 0},
		{in: "47", want: 47},
		{in: "255", want: 255},
		{in: " tcp ", want: ProtocolTCP},
		{in: "256", wantErr: true},
		{in: "-2", wantErr: true},
		{in: "", wantErr: true},
		{in: "sctp", wantErr: true},
		{in: "6.0", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseProtocol(tt.in)
		if (err != nil) != tt.wantErr || (!tt.wantErr && got != tt.want) {
			t.Errorf("ParseProtocol(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestProtocolName(t *testing.T) {
	tests := []struct {
		in   int
		want string
	}{
		{ProtocolTCP, "tcp"},
		{ProtocolUDP, "udp"},
		{ProtocolICMP, "icmp"},
		{ProtocolICMPv6, "icmpv6"},
		{ProtocolAll, "-1"},
		{0, "0"},
		{47, "47"},
	}
	for _, tt := range tests {
		if got := ProtocolName(tt.in); got != tt.want {
			t.Errorf("ProtocolName(%d) = %q, want %q", tt.in, got, tt.want)
		}
		// Names round-trip, so the API can store either spelling.
		if back, err := ParseProtocol(tt.want); err != nil || back != tt.in {
			t.Errorf("ParseProtocol(ProtocolName(%d)) = %d, %v", tt.in, back, err)
		}
	}
}
