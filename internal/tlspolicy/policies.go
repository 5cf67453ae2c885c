package tlspolicy

// The tables below are AWS's, copied as data. Sources:
//
//   - "Security policies for your Application Load Balancer"
//     (docs.aws.amazon.com/elasticloadbalancing/latest/application/describe-ssl-policies.html),
//     sections "TLS security policies" and "FS supported policies": protocols and ciphers of the
//     TLS13-*, TLS-1-1/1-2-*, FS-* and 2016-08 policies, ciphers in the listed order, which is the
//     priority DescribeSslPolicies reports. ELB's security policies are shared by Application and
//     Network Load Balancers ("Security policies for your Network Load Balancer" lists the same
//     names and refers to the same tables).
//   - The Network Load Balancer guide's earlier "TLS listeners" page
//     (github.com/awsdocs/elb-network-load-balancers-user-guide, doc_source/create-tls-listener.md):
//     ELBSecurityPolicy-TLS-1-0-2015-04 (2016-08 plus DES-CBC3-SHA) and
//     ELBSecurityPolicy-2015-05 ("identical to ELBSecurityPolicy-2016-08"), and the ALPN policies.

// Protocol names as DescribeSslPolicies spells them.
const (
	TLSv10 = "TLSv1"
	TLSv11 = "TLSv1.1"
	TLSv12 = "TLSv1.2"
	TLSv13 = "TLSv1.3"
)

// cipherSuites maps the OpenSSL names AWS uses to the IANA names (which crypto/tls uses too) and
// code points, from the "Policies by cipher" tables.
var cipherSuites = map[string]struct {
	iana string
	code uint16
}{
	"TLS_AES_128_GCM_SHA256":        {"TLS_AES_128_GCM_SHA256", 0x1301},
	"TLS_AES_256_GCM_SHA384":        {"TLS_AES_256_GCM_SHA384", 0x1302},
	"TLS_CHACHA20_POLY1305_SHA256":  {"TLS_CHACHA20_POLY1305_SHA256", 0x1303},
	"ECDHE-ECDSA-AES128-GCM-SHA256": {"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", 0xc02b},
	"ECDHE-RSA-AES128-GCM-SHA256":   {"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", 0xc02f},
	"ECDHE-ECDSA-AES128-SHA256":     {"TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", 0xc023},
	"ECDHE-RSA-AES128-SHA256":       {"TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", 0xc027},
	"ECDHE-ECDSA-AES128-SHA":        {"TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", 0xc009},
	"ECDHE-RSA-AES128-SHA":          {"TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", 0xc013},
	"ECDHE-ECDSA-AES256-GCM-SHA384": {"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", 0xc02c},
	"ECDHE-RSA-AES256-GCM-SHA384":   {"TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", 0xc030},
	"ECDHE-ECDSA-AES256-SHA384":     {"TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384", 0xc024},
	"ECDHE-RSA-AES256-SHA384":       {"TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384", 0xc028},
	"ECDHE-ECDSA-AES256-SHA":        {"TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", 0xc00a},
	"ECDHE-RSA-AES256-SHA":          {"TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", 0xc014},
	"AES128-GCM-SHA256":             {"TLS_RSA_WITH_AES_128_GCM_SHA256", 0x009c},
	"AES128-SHA256":                 {"TLS_RSA_WITH_AES_128_CBC_SHA256", 0x003c},
	"AES128-SHA":                    {"TLS_RSA_WITH_AES_128_CBC_SHA", 0x002f},
	"AES256-GCM-SHA384":             {"TLS_RSA_WITH_AES_256_GCM_SHA384", 0x009d},
	"AES256-SHA256":                 {"TLS_RSA_WITH_AES_256_CBC_SHA256", 0x003d},
	"AES256-SHA":                    {"TLS_RSA_WITH_AES_256_CBC_SHA", 0x0035},
	"DES-CBC3-SHA":                  {"TLS_RSA_WITH_3DES_EDE_CBC_SHA", 0x000a},
}

// Cipher lists shared by several policies, in AWS's priority order.
var (
	tls13Ciphers = []string{"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}

	// ciphers2016 is ELBSecurityPolicy-2016-08's list, which most policies narrow.
	ciphers2016 = []string{
		"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
		"ECDHE-ECDSA-AES128-SHA256", "ECDHE-RSA-AES128-SHA256",
		"ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA",
		"ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
		"ECDHE-ECDSA-AES256-SHA384", "ECDHE-RSA-AES256-SHA384",
		"ECDHE-ECDSA-AES256-SHA", "ECDHE-RSA-AES256-SHA",
		"AES128-GCM-SHA256", "AES128-SHA256", "AES128-SHA",
		"AES256-GCM-SHA384", "AES256-SHA256", "AES256-SHA",
	}
	// ciphers12 drops the SHA-1 suites: TLS-1-2-2017-01, TLS13-1-2-Ext1.
	ciphers12 = []string{
		"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
		"ECDHE-ECDSA-AES128-SHA256", "ECDHE-RSA-AES128-SHA256",
		"ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
		"ECDHE-ECDSA-AES256-SHA384", "ECDHE-RSA-AES256-SHA384",
		"AES128-GCM-SHA256", "AES128-SHA256",
		"AES256-GCM-SHA384", "AES256-SHA256",
	}
	// ciphersFS keeps the ECDHE suites only: FS-2018-06, FS-1-1-2019-08, FS-1-2-2019-08.
	ciphersFS = []string{
		"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
		"ECDHE-ECDSA-AES128-SHA256", "ECDHE-RSA-AES128-SHA256",
		"ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA",
		"ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
		"ECDHE-ECDSA-AES256-SHA384", "ECDHE-RSA-AES256-SHA384",
		"ECDHE-RSA-AES256-SHA", "ECDHE-ECDSA-AES256-SHA",
	}
	// ciphersFS12 keeps the ECDHE suites without SHA-1: FS-1-2-Res-2019-08, TLS13-1-2-2021-06.
	ciphersFS12 = []string{
		"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
		"ECDHE-ECDSA-AES128-SHA256", "ECDHE-RSA-AES128-SHA256",
		"ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
		"ECDHE-ECDSA-AES256-SHA384", "ECDHE-RSA-AES256-SHA384",
	}
	// ciphersGCM keeps the ECDHE AES-GCM suites: FS-1-2-Res-2020-10, TLS13-1-2-Res-2021-06.
	ciphersGCM = []string{
		"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
		"ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
	}
)

var (
	protocols10to12 = []string{TLSv10, TLSv11, TLSv12}
	protocols11to12 = []string{TLSv11, TLSv12}
	protocols12     = []string{TLSv12}
)

// bothTypes is every policy's SupportedLoadBalancerTypes: ELB's predefined policies serve both.
var bothTypes = []string{"application", "network"}

func join(lists ...[]string) []string {
	var all []string
	for _, l := range lists {
		all = append(all, l...)
	}
	return all
}

// table is every policy moat knows, newest first as AWS lists them.
var table = []Policy{
	{Name: "ELBSecurityPolicy-TLS13-1-3-2021-06", Protocols: []string{TLSv13}, Ciphers: tls13Ciphers},
	{Name: "ELBSecurityPolicy-TLS13-1-2-2021-06", Protocols: []string{TLSv12, TLSv13}, Ciphers: join(tls13Ciphers, ciphersFS12)},
	{Name: "ELBSecurityPolicy-TLS13-1-2-Res-2021-06", Protocols: []string{TLSv12, TLSv13}, Ciphers: join(tls13Ciphers, ciphersGCM)},
	{Name: "ELBSecurityPolicy-TLS13-1-2-Ext2-2021-06", Protocols: []string{TLSv12, TLSv13}, Ciphers: join(tls13Ciphers, ciphers2016)},
	{Name: "ELBSecurityPolicy-TLS13-1-2-Ext1-2021-06", Protocols: []string{TLSv12, TLSv13}, Ciphers: join(tls13Ciphers, ciphers12)},
	{Name: "ELBSecurityPolicy-TLS13-1-1-2021-06", Protocols: []string{TLSv11, TLSv12, TLSv13}, Ciphers: join(tls13Ciphers, ciphers2016)},
	{Name: "ELBSecurityPolicy-TLS13-1-0-2021-06", Protocols: []string{TLSv10, TLSv11, TLSv12, TLSv13}, Ciphers: join(tls13Ciphers, ciphers2016)},
	{Name: "ELBSecurityPolicy-TLS-1-2-Ext-2018-06", Protocols: protocols12, Ciphers: ciphers2016},
	{Name: "ELBSecurityPolicy-TLS-1-2-2017-01", Protocols: protocols12, Ciphers: ciphers12},
	{Name: "ELBSecurityPolicy-TLS-1-1-2017-01", Protocols: protocols11to12, Ciphers: ciphers2016},
	{Name: "ELBSecurityPolicy-2016-08", Protocols: protocols10to12, Ciphers: ciphers2016},
	{Name: "ELBSecurityPolicy-TLS-1-0-2015-04", Protocols: protocols10to12, Ciphers: join(ciphers2016, []string{"DES-CBC3-SHA"})},
	{Name: "ELBSecurityPolicy-2015-05", Protocols: protocols10to12, Ciphers: ciphers2016},
	{Name: "ELBSecurityPolicy-FS-1-2-Res-2020-10", Protocols: protocols12, Ciphers: ciphersGCM},
	{Name: "ELBSecurityPolicy-FS-1-2-Res-2019-08", Protocols: protocols12, Ciphers: ciphersFS12},
	{Name: "ELBSecurityPolicy-FS-1-2-2019-08", Protocols: protocols12, Ciphers: ciphersFS},
	{Name: "ELBSecurityPolicy-FS-1-1-2019-08", Protocols: protocols11to12, Ciphers: ciphersFS},
	{Name: "ELBSecurityPolicy-FS-2018-06", Protocols: protocols10to12, Ciphers: ciphersFS},
}

// alpnPolicies are the ALPN preference lists of NLB's ALPN policies ("ALPN policies" in the
// Network Load Balancer guide).
var alpnPolicies = map[string][]string{
	"HTTP1Only":      {"http/1.1", "http/1.0"},
	"HTTP2Only":      {"h2"},
	"HTTP2Optional":  {"http/1.1", "http/1.0", "h2"},
	"HTTP2Preferred": {"h2", "http/1.1", "http/1.0"},
	"None":           nil,
}
