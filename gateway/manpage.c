/*
 * cg-manpage: writes contacts-gateway(8) on stdout; run by the build.
 *
 * Usage: cg-manpage DATE CONFDIR DOCDIR (the page's date, YYYY-MM-DD, and the
 * installed config and docs directories, named in FILES). The OPTIONS section comes from config.c's
 * option table (config_manpage_options), the one --help prints, so the man
 * page cannot list an option the binary does not have, or miss one. The
 * prose around it is here, in roff: hyphens are written \- and no line of
 * text starts with a dot.
 */
#include <stdio.h>

#include "gateway/config.h"

/* Writes a path as roff text: its hyphens as \-. */
static void roff_path(FILE *out, const char *s)
{
	for (; *s; s++) {
		if (*s == '-' || *s == '\\')
			fputc('\\', out);
		fputc(*s == '\\' ? 'e' : *s, out);
	}
}

static void header(FILE *out, const char *date)
{
	fprintf(out, ".TH CONTACTS\\-GATEWAY 8 %s ", date); /* a date as mandoc reads it */
	fputs("\"contacts\\-gateway " CG_VERSION "\" \"System Administration\"\n"
	      ".SH NAME\n"
	      "contacts\\-gateway \\- caching HTTP gateway for a vendor's contacts endpoint\n"
	      ".SH SYNOPSIS\n"
	      ".B contacts\\-gateway\n"
	      "[\\fIOPTIONS\\fR]\n"
	      ".br\n"
	      ".B contacts\\-gateway \\-t\n"
	      "[\\fIOPTIONS\\fR]\n"
	      ".br\n"
	      ".B contacts\\-gateway cache\n"
	      "\\fICOMMAND\\fR [\\fIARGS\\fR]\n"
	      ".br\n"
	      ".B contacts\\-gateway \\-\\-version\n"
	      ".SH DESCRIPTION\n"
	      ".B contacts\\-gateway\n"
	      "serves \\fBGET /api/public/contacts\\fR in front of one vendor endpoint\n"
	      "(the \\fB\\-\\-upstream\\fR URL).\n"
	      "Requests are validated and normalised locally (invalid ones get a JSON\n"
	      "400 or 401 and cost no upstream quota), answers are cached in an LMDB\n"
	      "directory keyed on a hash of the API key and the canonical query,\n"
	      "identical concurrent misses make one upstream request, each API key is\n"
	      "kept under its upstream rate, and stored answers stand in when the\n"
	      "vendor fails or limits it.\n"
	      ".PP\n"
	      "With \\fB\\-\\-derive\\fR, a question whose answer lies in a fresh stored\n"
	      "answer of the same key is cut out of it byte for byte, without asking\n"
	      "the vendor.\n"
	      ".PP\n"
	      "It logs one line per event on standard error (and, with\n"
	      "\\fB\\-\\-access\\-log\\fR, one JSON line per request), answers\n"
	      "\\fBGET /healthz\\fR with 200 while it runs, \\fBGET /readyz\\fR with 200\n"
	      "while it accepts work, and \\fBGET /metrics\\fR with Prometheus metrics.\n",
	      out);
}

static void options(FILE *out)
{
	fputs(".SH OPTIONS\n"
	      "Each setting is a long option \\fB\\-\\-\\fR\\fIname value\\fR (or\n"
	      "\\fB\\-\\-\\fR\\fIname\\fB=\\fR\\fIvalue\\fR) and the same key in the config file\n"
	      "(\\fIname\\fR \\fB=\\fR \\fIvalue\\fR lines, \\fB#\\fR comment lines).\n"
	      "Precedence: defaults, then the file given by \\fB\\-\\-config\\fR, then the\n"
	      "flags, whatever their order.\n"
	      "A key set twice in the file is an error naming both lines.\n"
	      "A value that starts with \\fB\\-\\-\\fR is taken as a missing value.\n"
	      ".PP\n"
	      "Durations (\\fIMS\\fR, \\fISECONDS\\fR) are whole numbers with an optional\n"
	      "unit: \\fBms\\fR, \\fBs\\fR, \\fBm\\fR, \\fBh\\fR, \\fBd\\fR\n"
	      "(\\fB500ms\\fR, \\fB30s\\fR, \\fB5m\\fR, \\fB1h\\fR, \\fB1d\\fR);\n"
	      "a bare number is in the unit the option names.\n"
	      "Sizes (\\fIBYTES\\fR) take a \\fBK\\fR, \\fBM\\fR or \\fBG\\fR suffix (binary).\n"
	      "A flag without a value may be followed by \\fBtrue\\fR, \\fBfalse\\fR,\n"
	      "\\fByes\\fR, \\fBno\\fR, \\fBon\\fR or \\fBoff\\fR.\n",
	      out);
	config_manpage_options(out);
}

static void rest(FILE *out, const char *confdir, const char *docdir)
{
	fputs(".SH SIGNALS\n"
	      ".TP\n"
	      ".BR SIGTERM \", \" SIGINT\n"
	      "Stop accepting connections, finish the requests in flight (at most\n"
	      "\\fB\\-\\-shutdown\\-timeout\\fR; what is left then gets 503) and exit 0.\n"
	      "A second signal stops at once.\n"
	      ".TP\n"
	      ".B SIGHUP\n"
	      "Reread the config file and apply what can change without a restart;\n"
	      "reopen the log files.\n"
	      "A config that does not validate is refused whole and the old settings\n"
	      "stay.\n"
	      ".TP\n"
	      ".B SIGUSR1\n"
	      "Reopen the log files (as logrotate expects).\n"
	      ".TP\n"
	      ".BR SIGRTMIN+1 \", \" SIGRTMIN+2\n"
	      "Go offline (answer from the cache only), and back online.\n"
	      ".TP\n"
	      ".B SIGUSR2\n"
	      "Ignored.\n"
	      ".SH RESTARTS\n"
	      "Under systemd with the socket unit, \\fBsystemctl restart\\fR refuses no\n"
	      "connection: they wait in the socket's backlog. Elsewhere, start the new\n"
	      "gateway with the same \\fB\\-\\-cache\\-dir\\fR and \\fB\\-\\-takeover\\fR: it takes\n"
	      "the running gateway's listening sockets (over a Unix socket in the cache\n"
	      "directory), which then drains and exits.\n"
	      ".SH CACHE TOOLS\n"
	      "\\fBcontacts\\-gateway cache\\fR \\fICOMMAND\\fR works on a cache directory\n"
	      "(\\fB\\-\\-cache\\-dir\\fR), beside a running gateway or not:\n"
	      ".TP\n"
	      ".B stats\n"
	      "entries, sizes and ages, per key hash (never a key);\n"
	      ".TP\n"
	      ".B list\n"
	      "one line per entry;\n"
	      ".TP\n"
	      ".B purge\n"
	      "delete entries by key (\\fB\\-\\-key\\-stdin\\fR), key hash, query prefix or\n"
	      "expiry, or all;\n"
	      ".TP\n"
	      ".B export \\fIFILE\\fR\n"
	      "write every entry as JSON lines;\n"
	      ".TP\n"
	      ".B import \\fIFILE\\fR\n"
	      "read an export back, byte for byte.\n"
	      ".PP\n"
	      "\\fBcontacts\\-gateway cache \\-\\-help\\fR lists their options.\n"
	      ".SH ENVIRONMENT\n"
	      ".TP\n"
	      ".BR https_proxy \", \" http_proxy \", \" all_proxy \", \" no_proxy\n"
	      "The upstream client (libcurl) sends its requests through the proxy these\n"
	      "name, unless the upstream host matches \\fBno_proxy\\fR.\n"
	      "With a TLS\\-inspecting proxy, give its CA in\n"
	      "\\fB\\-\\-upstream\\-ca\\-file\\fR.\n"
	      ".TP\n"
	      ".BR NOTIFY_SOCKET \", \" LISTEN_FDS\n"
	      "Set by systemd for a \\fBType=notify\\fR service and for socket activation.\n"
	      ".SH FILES\n",
	      out);
	fputs(".TP\n.I ", out);
	roff_path(out, confdir);
	fputs("/contacts\\-gateway.conf\n"
	      "The example config file, read when given with \\fB\\-\\-config\\fR\n"
	      "(the systemd unit does).\n"
	      ".TP\n"
	      ".I /var/lib/contacts\\-gateway\n"
	      "The cache directory under the systemd unit (its StateDirectory).\n"
	      ".TP\n"
	      ".IR DIR /data.mdb \", \" DIR /gateway.lock\n"
	      "The LMDB cache in a cache directory, and the lock that keeps a second\n"
	      "gateway off it.\n"
	      ".TP\n.I ",
	      out);
	roff_path(out, docdir);
	fputs("\nThe full documentation: configuration, operations, design.\n", out);
	fputs(".SH EXIT STATUS\n"
	      ".TP\n"
	      ".B 0\n"
	      "Stopped by SIGTERM or SIGINT after draining; \\fB\\-t\\fR found the\n"
	      "configuration good; \\fB\\-\\-help\\fR, \\fB\\-\\-version\\fR.\n"
	      ".TP\n"
	      ".B 1\n"
	      "A failure at run time (the event loop or the upstream client could not\n"
	      "be set up).\n"
	      "For the cache tools: a partial failure.\n"
	      ".TP\n"
	      ".B 2\n"
	      "A bad option, value or config file, an address that cannot be resolved\n"
	      "or bound, or a cache directory that cannot be used: one line on\n"
	      "standard error, \\fBcontacts\\-gateway: \\fR\\fImessage\\fR, before\n"
	      "anything is served.\n"
	      ".SH SEE ALSO\n"
	      ".BR curl (1),\n"
	      ".BR systemd.service (5),\n"
	      ".BR systemd.socket (5),\n"
	      ".BR systemd.exec (5)\n",
	      out);
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fputs("usage: cg-manpage DATE CONFDIR DOCDIR > contacts-gateway.8\n", stderr);
		return 2;
	}
	header(stdout, argv[1]);
	options(stdout);
	rest(stdout, argv[2], argv[3]);
	return fflush(stdout) == 0 ? 0 : 1;
}
