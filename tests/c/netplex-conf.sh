# Configuration writers sourced by tests/c/run.sh, tests/c/daemon.sh,
# bench/c/run.sh and tests/conformance/pkcs11test.sh.

# write_softhsm_conf DIR
# Writes DIR/softhsm2.conf for a SoftHSM2 store in DIR/tokens (created).
write_softhsm_conf() {
  mkdir -p "$1/tokens"
  cat > "$1/softhsm2.conf" <<CONF
directories.tokendir = $1/tokens
objectstore.backend = file
log.level = ERROR
CONF
}

# write_netplex_conf DIR MODULE_PATH ALIAS ADDRESS_BLOCK
# Writes DIR/filter.conf (only `modules`, a pass-through policy) and
# DIR/pkcs11proxyd.conf in Caml Crush's netplex syntax, which both Debian's
# Caml Crush daemon and ours load. Caml Crush needs the workload_manager
# block; ours honours max_threads as a cap on its workers and accepts the
# one-job-per-process values Caml Crush requires (src/config/not-enforced.ts).
write_netplex_conf() {
  local dir=$1 module=$2 alias=$3 address=$4
  cat > "$dir/filter.conf" <<CONF
modules = [("$alias", "$module")]
CONF
  cat > "$dir/pkcs11proxyd.conf" <<CONF
netplex {
  controller {
    max_level = "info";
    socket_directory = "$dir/netplex";
    logging { type = "stderr"; };
  };
  service {
    name = "PKCS#11 Filtering Proxy";
    conn_limit = 1;
    protocol {
      name = "rpc_pkcs11";
      $address
    };
    processor {
      type = "rpc_pkcs11";
      filter_config = "$dir/filter.conf";
      use_ssl = false;
    };
    workload_manager {
      type = "dynamic";
      max_jobs_per_thread = 1;
      min_free_jobs_capacity = 1;
      max_free_jobs_capacity = 1;
      max_threads = 100;
    };
  }
}
CONF
}
