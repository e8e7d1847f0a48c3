// Whole-system simulation harness around the Verilated processor top level `dlproc_top`.
//
// Built by dlproc.sim.verilator.build into a shared library and driven from Python through ctypes
// (dlproc.sim.verilator.device). Python only calls in per register access, DDR copy or run request; every
// cycle is clocked here, so a simulation runs at the speed of the Verilated model.
//
// What it models around the top level:
//   * an AXI4-Lite master on `s_axil` (the CPU's register accesses), one transaction at a time;
//   * a DDR memory on `m_axi`: an AXI4 slave with IDs, INCR bursts, read and write latency, a bandwidth limit
//     (beats per cycle as a fraction, per direction like a PS HP port), an optional shared DDR controller limit
//     (beats per cycle as a fraction, read and write beats together: dl_set_ddr_bandwidth, the memory model of
//     dlproc.boards.memory), a limit on outstanding bursts, in-order
//     responses per ID (optionally reordered across IDs), DECERR outside [base, base + size), an error-injection
//     range, and random stalls on every channel;
//   * an AXI protocol checker on `m_axi`: 4 KiB boundary crossings, unsupported burst types or sizes, WLAST
//     mismatches and VALID/payload changes before the handshake are counted, not fatal, so a test can assert
//     that the count is zero and print the first and last message.
//
// Cycle structure (one call of Sim::tick):
//   1. drive():  set every input of the top level from the harness state of this cycle. The harness's own
//                READY/VALID outputs never depend combinationally on the design's outputs in the same cycle.
//   2. clk = 0, eval: settle the design's combinational paths (its READYs may depend on our VALIDs).
//   3. sample(): record which handshakes happen at the coming rising edge (VALID && READY now).
//   4. clk = 1, eval: the design's registers update.
//   5. update(): apply the handshakes to the harness state.
// With tracing, the falling edge is dumped at time 2*cycle and the rising edge at 2*cycle + 1.

#include "Vdlproc_top.h"
#include "verilated.h"
#if VM_TRACE
#include "verilated_fst_c.h"
#endif

#include <algorithm>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#define DL_API extern "C" __attribute__((visibility("default")))

// Amaranth names a flattened interface member `m_axi__awaddr`; Verilator escapes "__" in C++ names as "___05F".
#define AXI(name) m_axi___05F##name
#define LITE(name) s_axil___05F##name

// Bump when the C API changes; the Python side refuses a library with another version.
#define DL_ABI_VERSION 2

namespace {

// ------------------------------------------------------------------ width-generic port access
// Verilator maps a port of up to 8/16/32/64 bits to uint8/16/32/64_t and a wider one to VlWide<words>.

template <typename T>
uint64_t to_u64(const T& value) {
    return static_cast<uint64_t>(value);
}
template <std::size_t N>
uint64_t to_u64(const VlWide<N>& value) {
    return static_cast<uint64_t>(value[0]) | (N > 1 ? static_cast<uint64_t>(value[1]) << 32 : 0);
}

template <typename T>
void port_to_bytes(const T& value, uint8_t* out) {
    const uint64_t v = static_cast<uint64_t>(value);
    for (std::size_t i = 0; i < sizeof(T); ++i) out[i] = static_cast<uint8_t>(v >> (8 * i));
}
template <std::size_t N>
void port_to_bytes(const VlWide<N>& value, uint8_t* out) {
    for (std::size_t w = 0; w < N; ++w)
        for (std::size_t b = 0; b < 4; ++b) out[4 * w + b] = static_cast<uint8_t>(value[w] >> (8 * b));
}

template <typename T>
void bytes_to_port(T& port, const uint8_t* in) {
    uint64_t v = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) v |= static_cast<uint64_t>(in[i]) << (8 * i);
    port = static_cast<T>(v);
}
template <std::size_t N>
void bytes_to_port(VlWide<N>& port, const uint8_t* in) {
    for (std::size_t w = 0; w < N; ++w) {
        uint32_t v = 0;
        for (std::size_t b = 0; b < 4; ++b) v |= static_cast<uint32_t>(in[4 * w + b]) << (8 * b);
        port[w] = v;
    }
}

using DataPort = std::remove_reference_t<decltype(std::declval<Vdlproc_top&>().AXI(wdata))>;
// Bytes of one AXI data beat. Data widths are 32 to 512 bits, which Verilator stores without padding.
constexpr uint64_t BUS_BYTES = sizeof(DataPort);
static_assert(BUS_BYTES >= 4 && BUS_BYTES <= 64 && (BUS_BYTES & (BUS_BYTES - 1)) == 0,
              "m_axi data width must be 32 to 512 bits, a power of two");
constexpr uint32_t BUS_SIZE_LOG2 = __builtin_ctzll(BUS_BYTES);

constexpr int RESP_OKAY = 0;
constexpr int RESP_SLVERR = 2;
constexpr int RESP_DECERR = 3;
constexpr int BURST_INCR = 1;
constexpr uint64_t LITE_TIMEOUT_CYCLES = 100000;

struct Burst {
    uint32_t id = 0;
    uint64_t addr = 0;        // address of the first beat (may be unaligned)
    uint32_t beats = 0;       // AxLEN + 1
    uint32_t size_log2 = 0;   // AxSIZE
    int resp = RESP_OKAY;     // response of every beat (OKAY, injected SLVERR/DECERR, DECERR out of range)
    uint64_t ready_at = 0;    // read: first cycle the first beat may be returned
    uint32_t beat = 0;        // beats transferred so far

    // Bus-aligned address of the word holding beat `i` (INCR: beat 0 at addr, later beats size-aligned).
    uint64_t word_addr(uint32_t i) const {
        const uint64_t step = 1ull << size_log2;
        const uint64_t a = i == 0 ? addr : (addr & ~(step - 1)) + static_cast<uint64_t>(i) * step;
        return a & ~(BUS_BYTES - 1);
    }
};

struct WriteResponse {
    uint32_t id;
    int resp;
    uint64_t ready_at;
};

// Snapshot of a channel's VALID payload while the master waits for READY (AXI: it must stay unchanged).
struct Held {
    bool waiting = false;
    std::vector<uint8_t> payload;
};

class Sim {
  public:
    Sim(uint64_t base, uint64_t size, const char* trace_path);
    ~Sim();

    void reset(int cycles);
    void tick();
    int reg_write(uint32_t addr, uint32_t data);
    int reg_read(uint32_t addr, uint32_t* data);
    uint64_t run_until_irq(uint64_t max_cycles);
    uint64_t step(uint64_t cycles);

    // DDR model parameters
    int read_latency = 24;
    int write_latency = 8;
    int bw_num = 1, bw_den = 1;
    // shared DDR controller: at most ddr_num / ddr_den beats per cycle, reads and writes together (0: no limit)
    int64_t ddr_num = 0, ddr_den = 1;
    int64_t ddr_credit = 0;  // credit of the shared controller, ddr_den per beat
    int max_outstanding = 8;
    int stall_percent = 0;
    bool reorder = false;
    uint64_t err_lo = 0, err_hi = 0;
    int err_resp = RESP_OKAY;

    uint64_t base, size;
    uint8_t* mem = nullptr;
    uint64_t cycle = 0;

    // statistics
    uint64_t protocol_errors = 0;
    std::string first_error, last_error;
    uint64_t rd_beats = 0, wr_beats = 0, rd_bursts = 0, wr_bursts = 0, decode_errors = 0, injected_errors = 0;

    std::unique_ptr<VerilatedContext> ctx;
    std::unique_ptr<Vdlproc_top> top;
#if VM_TRACE
    std::unique_ptr<VerilatedFstC> tfp;
#endif

    uint64_t rng = 0x9E3779B97F4A7C15ull;

  private:
    bool ddr_allows() const { return ddr_num == 0 || ddr_credit >= ddr_den; }
    void drive();
    void sample();
    void update();
    void clear_state();
    bool stall();
    uint64_t random();
    void violation(const char* fmt, ...) __attribute__((format(printf, 2, 3)));
    Burst accept_burst(const char* ch, uint32_t id, uint64_t addr, uint32_t len, uint32_t size_log2,
                       uint32_t burst);
    void check_stable(Held& held, const char* channel, bool valid, bool ready, const uint8_t* payload,
                      std::size_t n);

    bool in_reset = false;

    // read side
    std::deque<Burst> rd_pending;   // accepted, not yet started, in acceptance order
    std::optional<Burst> rd_active; // burst whose beats are being returned (no interleaving)
    bool r_valid = false;
    int64_t rd_credit = 0, wr_credit = 0;

    // write side
    std::deque<Burst> wr_pending;   // accepted AW, data not complete; W beats belong to the front one
    std::deque<WriteResponse> wr_resp;
    bool b_valid = false;

    // handshakes sampled in this cycle
    bool ar_hs = false, aw_hs = false, w_hs = false, r_hs = false, b_hs = false;
    Burst ar_req, aw_req;
    uint8_t w_data[BUS_BYTES];
    uint64_t w_strb = 0;
    bool w_last = false;

    Held ar_held, aw_held, w_held;

    // AXI4-Lite master
    bool l_aw = false, l_w = false, l_b = false, l_ar = false, l_r = false;
    uint32_t l_addr = 0, l_wdata = 0, l_rdata = 0;
    int l_resp = 0;
    bool l_aw_hs = false, l_w_hs = false, l_b_hs = false, l_ar_hs = false, l_r_hs = false;
};

Sim::Sim(uint64_t base_, uint64_t size_, const char* trace_path) : base(base_), size(size_) {
    // calloc: the pages of a large DDR stay untouched (and cost nothing) until a test writes them.
    mem = static_cast<uint8_t*>(std::calloc(size, 1));
    if (!mem) throw std::bad_alloc();
    ctx = std::make_unique<VerilatedContext>();
    ctx->randReset(0);
#if VM_TRACE
    if (trace_path) ctx->traceEverOn(true);
#endif
    top = std::make_unique<Vdlproc_top>(ctx.get(), "TOP");
#if VM_TRACE
    if (trace_path) {
        tfp = std::make_unique<VerilatedFstC>();
        top->trace(tfp.get(), 99);
        tfp->open(trace_path);
    }
#else
    (void)trace_path;
#endif
    rd_credit = wr_credit = bw_den;
    ddr_credit = ddr_den;
    reset(4);
}

Sim::~Sim() {
#if VM_TRACE
    if (tfp) tfp->close();
#endif
    top->final();
    std::free(mem);
}

uint64_t Sim::random() {
    // xorshift64*: cheap, and reproducible across platforms for a given seed.
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545F4914F6CDD1Dull;
}

bool Sim::stall() { return stall_percent > 0 && static_cast<int>(random() % 100) < stall_percent; }

void Sim::violation(const char* fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = std::snprintf(buf, sizeof buf, "cycle %llu: ", static_cast<unsigned long long>(cycle));
    std::vsnprintf(buf + n, sizeof buf - n, fmt, ap);
    va_end(ap);
    ++protocol_errors;
    last_error = buf;
    if (protocol_errors == 1) first_error = buf;
}

void Sim::clear_state() {
    rd_pending.clear();
    rd_active.reset();
    wr_pending.clear();
    wr_resp.clear();
    r_valid = b_valid = false;
    ar_held = Held{};
    aw_held = Held{};
    w_held = Held{};
    l_aw = l_w = l_b = l_ar = l_r = false;
    rd_credit = wr_credit = bw_den;
    ddr_credit = ddr_den;
}

void Sim::reset(int cycles) {
    clear_state();
    in_reset = true;
    top->rst = 1;
    for (int i = 0; i < std::max(cycles, 1); ++i) tick();
    top->rst = 0;
    in_reset = false;
}

Burst Sim::accept_burst(const char* ch, uint32_t id, uint64_t addr, uint32_t len, uint32_t size_log2,
                        uint32_t burst) {
    Burst b;
    b.id = id;
    b.addr = addr;
    b.beats = len + 1;
    b.size_log2 = size_log2;
    if (burst != BURST_INCR)
        violation("%s burst type %u at 0x%llx: only INCR (1) is supported", ch, burst,
                  static_cast<unsigned long long>(addr));
    if (size_log2 > BUS_SIZE_LOG2) {
        violation("%sSIZE %u (%u bytes) is wider than the %llu-byte data bus", ch, size_log2, 1u << size_log2,
                  static_cast<unsigned long long>(BUS_BYTES));
        b.size_log2 = BUS_SIZE_LOG2;
    }
    const uint64_t step = 1ull << b.size_log2;
    const uint64_t last = (addr & ~(step - 1)) + b.beats * step - 1;
    if ((addr >> 12) != (last >> 12))
        violation("%s burst 0x%llx..0x%llx (%u beats of %llu bytes, id %u) crosses a 4 KiB boundary", ch,
                  static_cast<unsigned long long>(addr), static_cast<unsigned long long>(last), b.beats,
                  static_cast<unsigned long long>(step), id);
    if (addr < base || last >= base + size) {
        b.resp = RESP_DECERR;  // nothing answers there: the interconnect's decode error
        ++decode_errors;
    } else if (err_resp != RESP_OKAY && addr - base < err_hi && last - base >= err_lo) {
        b.resp = err_resp;
        ++injected_errors;
    }
    return b;
}

void Sim::check_stable(Held& held, const char* channel, bool valid, bool ready, const uint8_t* payload,
                       std::size_t n) {
    if (held.waiting) {
        if (!valid)
            violation("%sVALID dropped before %sREADY", channel, channel);
        else if (std::memcmp(held.payload.data(), payload, n) != 0)
            violation("%s payload changed while %sVALID was waiting for %sREADY", channel, channel, channel);
    }
    held.waiting = valid && !ready;
    if (held.waiting) held.payload.assign(payload, payload + n);
}

void Sim::drive() {
    Vdlproc_top& t = *top;
    if (in_reset) {
        t.AXI(arready) = t.AXI(awready) = t.AXI(wready) = 0;
        t.AXI(rvalid) = t.AXI(bvalid) = 0;
        t.LITE(awvalid) = t.LITE(wvalid) = t.LITE(arvalid) = 0;
        t.LITE(bready) = t.LITE(rready) = 0;
        return;
    }
    const std::size_t rd_outstanding = rd_pending.size() + (rd_active ? 1 : 0);
    const std::size_t wr_outstanding = wr_pending.size() + wr_resp.size();
    t.AXI(arready) = rd_outstanding < static_cast<std::size_t>(max_outstanding) && !stall();
    t.AXI(awready) = wr_outstanding < static_cast<std::size_t>(max_outstanding) && !stall();
    // (the random stall of W is drawn here so the stall pattern does not depend on the shared DDR limit)
    const bool w_open = !wr_pending.empty() && wr_credit >= bw_den && !stall();
    if (!r_valid) {
        if (!rd_active) {
            // Candidates: the oldest pending burst of each ID whose latency has passed (responses of one ID
            // stay in order); without reordering only the oldest burst overall.
            std::vector<std::size_t> ready;
            std::vector<uint32_t> seen;
            for (std::size_t i = 0; i < rd_pending.size(); ++i) {
                const Burst& b = rd_pending[i];
                if (std::find(seen.begin(), seen.end(), b.id) != seen.end()) continue;
                seen.push_back(b.id);
                if (b.ready_at <= cycle) ready.push_back(i);
                if (!reorder) break;
            }
            if (!ready.empty()) {
                const std::size_t pick = reorder ? ready[random() % ready.size()] : ready[0];
                rd_active = rd_pending[pick];
                rd_pending.erase(rd_pending.begin() + static_cast<std::ptrdiff_t>(pick));
            }
        }
        if (rd_active && rd_credit >= bw_den && ddr_allows() && !stall()) {
            Burst& b = *rd_active;
            uint8_t word[BUS_BYTES] = {};
            if (b.resp == RESP_OKAY) std::memcpy(word, mem + (b.word_addr(b.beat) - base), BUS_BYTES);
            bytes_to_port(t.AXI(rdata), word);
            t.AXI(rid) = b.id;
            t.AXI(rresp) = b.resp;
            t.AXI(rlast) = b.beat + 1 == b.beats;
            r_valid = true;
            rd_credit -= bw_den;
            if (ddr_num) ddr_credit -= ddr_den;
        }
    }
    t.AXI(rvalid) = r_valid;
    // After the read side took its share of the shared controller's credit this cycle: a W beat accepted now
    // is paid in update(), so the two directions together never exceed ddr_num / ddr_den beats per cycle.
    t.AXI(wready) = w_open && ddr_allows();

    if (!b_valid && !wr_resp.empty() && wr_resp.front().ready_at <= cycle && !stall()) {
        t.AXI(bid) = wr_resp.front().id;
        t.AXI(bresp) = wr_resp.front().resp;
        b_valid = true;
    }
    t.AXI(bvalid) = b_valid;

    t.LITE(awvalid) = l_aw;
    t.LITE(awaddr) = l_addr;
    t.LITE(wvalid) = l_w;
    t.LITE(wdata) = l_wdata;
    t.LITE(wstrb) = 0xF;
    t.LITE(bready) = l_b;
    t.LITE(arvalid) = l_ar;
    t.LITE(araddr) = l_addr;
    t.LITE(rready) = l_r;
}

void Sim::sample() {
    Vdlproc_top& t = *top;
    ar_hs = aw_hs = w_hs = r_hs = b_hs = false;
    l_aw_hs = l_w_hs = l_b_hs = l_ar_hs = l_r_hs = false;
    if (in_reset) return;

    ar_hs = t.AXI(arvalid) && t.AXI(arready);
    aw_hs = t.AXI(awvalid) && t.AXI(awready);
    w_hs = t.AXI(wvalid) && t.AXI(wready);
    r_hs = r_valid && t.AXI(rready);
    b_hs = b_valid && t.AXI(bready);

    // Payload stability while VALID waits for READY.
    uint64_t ar[5] = {to_u64(t.AXI(arid)), to_u64(t.AXI(araddr)), to_u64(t.AXI(arlen)), to_u64(t.AXI(arsize)),
                      to_u64(t.AXI(arburst))};
    uint64_t aw[5] = {to_u64(t.AXI(awid)), to_u64(t.AXI(awaddr)), to_u64(t.AXI(awlen)), to_u64(t.AXI(awsize)),
                      to_u64(t.AXI(awburst))};
    uint8_t w[BUS_BYTES + 9];
    port_to_bytes(t.AXI(wdata), w);
    w_strb = to_u64(t.AXI(wstrb));
    w_last = t.AXI(wlast);
    std::memcpy(w + BUS_BYTES, &w_strb, 8);
    w[BUS_BYTES + 8] = w_last;
    check_stable(ar_held, "AR", t.AXI(arvalid), t.AXI(arready), reinterpret_cast<uint8_t*>(ar), sizeof ar);
    check_stable(aw_held, "AW", t.AXI(awvalid), t.AXI(awready), reinterpret_cast<uint8_t*>(aw), sizeof aw);
    check_stable(w_held, "W", t.AXI(wvalid), t.AXI(wready), w, sizeof w);

    if (ar_hs) ar_req = accept_burst("AR", ar[0], ar[1], ar[2], ar[3], ar[4]);
    if (aw_hs) aw_req = accept_burst("AW", aw[0], aw[1], aw[2], aw[3], aw[4]);
    if (w_hs) std::memcpy(w_data, w, BUS_BYTES);

    l_aw_hs = l_aw && t.LITE(awready);
    l_w_hs = l_w && t.LITE(wready);
    l_b_hs = l_b && t.LITE(bvalid);
    l_ar_hs = l_ar && t.LITE(arready);
    l_r_hs = l_r && t.LITE(rvalid);
    if (l_b_hs) l_resp = t.LITE(bresp);
    if (l_r_hs) {
        l_resp = t.LITE(rresp);
        l_rdata = t.LITE(rdata);
    }
}

void Sim::update() {
    if (ar_hs) {
        ar_req.ready_at = cycle + static_cast<uint64_t>(read_latency);
        rd_pending.push_back(ar_req);
        ++rd_bursts;
    }
    if (aw_hs) {
        wr_pending.push_back(aw_req);
        ++wr_bursts;
    }
    if (w_hs) {
        // wready is only driven while an accepted AW waits for data, so the front burst exists.
        Burst& b = wr_pending.front();
        if (b.resp == RESP_OKAY) {
            uint8_t* word = mem + (b.word_addr(b.beat) - base);
            for (uint64_t i = 0; i < BUS_BYTES; ++i)
                if (w_strb >> i & 1) word[i] = w_data[i];
        }
        const bool last = b.beat + 1 == b.beats;
        if (w_last != last)
            violation("W beat %u of %u (AW id %u, 0x%llx): WLAST is %d, expected %d", b.beat + 1, b.beats, b.id,
                      static_cast<unsigned long long>(b.addr), w_last ? 1 : 0, last ? 1 : 0);
        ++b.beat;
        ++wr_beats;
        wr_credit -= bw_den;
        if (ddr_num) ddr_credit -= ddr_den;
        if (last) {  // the burst ends after AWLEN + 1 beats whatever WLAST said
            wr_resp.push_back({b.id, b.resp, cycle + static_cast<uint64_t>(write_latency)});
            wr_pending.pop_front();
        }
    }
    if (r_hs) {
        r_valid = false;
        ++rd_beats;
        if (++rd_active->beat == rd_active->beats) rd_active.reset();
    }
    if (b_hs) {
        b_valid = false;
        wr_resp.pop_front();
    }
    const int64_t cap = static_cast<int64_t>(bw_den) + bw_num;
    rd_credit = std::min<int64_t>(rd_credit + bw_num, cap);
    wr_credit = std::min<int64_t>(wr_credit + bw_num, cap);
    if (ddr_num) ddr_credit = std::min<int64_t>(ddr_credit + ddr_num, ddr_den + ddr_num);

    if (l_aw_hs) l_aw = false;
    if (l_w_hs) l_w = false;
    if (l_b_hs) l_b = false;
    if (l_ar_hs) l_ar = false;
    if (l_r_hs) l_r = false;
}

void Sim::tick() {
    drive();
    top->clk = 0;
    top->eval();
#if VM_TRACE
    if (tfp) tfp->dump(2 * cycle);
#endif
    sample();
    top->clk = 1;
    top->eval();
#if VM_TRACE
    if (tfp) tfp->dump(2 * cycle + 1);
#endif
    update();
    ++cycle;
}

int Sim::reg_write(uint32_t addr, uint32_t data) {
    l_addr = addr;
    l_wdata = data;
    l_aw = l_w = l_b = true;
    for (uint64_t i = 0; i < LITE_TIMEOUT_CYCLES; ++i) {
        tick();
        if (!l_aw && !l_w && !l_b) return l_resp;
    }
    l_aw = l_w = l_b = false;
    return -1;
}

int Sim::reg_read(uint32_t addr, uint32_t* data) {
    l_addr = addr;
    l_ar = l_r = true;
    for (uint64_t i = 0; i < LITE_TIMEOUT_CYCLES; ++i) {
        tick();
        if (!l_ar && !l_r) {
            *data = l_rdata;
            return l_resp;
        }
    }
    l_ar = l_r = false;
    return -1;
}

uint64_t Sim::run_until_irq(uint64_t max_cycles) {
    uint64_t n = 0;
    while (n < max_cycles && !top->irq) {
        tick();
        ++n;
    }
    return n;
}

uint64_t Sim::step(uint64_t cycles) {
    for (uint64_t i = 0; i < cycles; ++i) tick();
    return cycles;
}

Sim* sim(void* handle) { return static_cast<Sim*>(handle); }

}  // namespace

// ------------------------------------------------------------------ C API (see device.py for the Python side)

DL_API int dl_abi_version() { return DL_ABI_VERSION; }

DL_API int dl_bus_bytes() { return static_cast<int>(BUS_BYTES); }

DL_API int dl_has_trace() { return VM_TRACE ? 1 : 0; }

// A new simulation: DDR of `ddr_bytes` (zeroed) at physical `ddr_phys_base`, reset applied. NULL on bad
// arguments (base not 4 KiB aligned, size not a multiple of the bus width), missing memory, or a trace path
// given to a library built without tracing.
DL_API void* dl_create(uint64_t ddr_phys_base, uint64_t ddr_bytes, const char* trace_fst_path) {
    if (ddr_phys_base % 4096 != 0 || ddr_bytes == 0 || ddr_bytes % BUS_BYTES != 0) return nullptr;
    if (trace_fst_path && !VM_TRACE) return nullptr;
    try {
        return new Sim(ddr_phys_base, ddr_bytes, trace_fst_path);
    } catch (...) {
        return nullptr;
    }
}

DL_API void dl_destroy(void* h) { delete sim(h); }

DL_API void dl_reset(void* h, int cycles) { sim(h)->reset(cycles); }

// Latencies count cycles from the handshake edge (AR, last W beat) to the first cycle RVALID/BVALID may be high:
// 1 means the very next cycle. Bandwidth: at most num/den beats per cycle and direction (num <= den).
// Returns -1 (and changes nothing) on invalid values.
DL_API int dl_set_ddr_timing(void* h, int read_latency, int write_latency, int beats_per_cycle_num,
                             int beats_per_cycle_den, int max_outstanding) {
    if (read_latency < 1 || write_latency < 1 || beats_per_cycle_num < 1 || beats_per_cycle_den < 1 ||
        beats_per_cycle_num > beats_per_cycle_den || max_outstanding < 1)
        return -1;
    Sim* s = sim(h);
    s->read_latency = read_latency;
    s->write_latency = write_latency;
    s->bw_num = beats_per_cycle_num;
    s->bw_den = beats_per_cycle_den;
    s->max_outstanding = max_outstanding;
    return 0;
}

// The shared DDR controller: read and write beats together at most num/den per cycle (any positive rate: a
// controller faster than the port never throttles it); num 0 switches the limit off. Returns -1 (and changes
// nothing) on invalid values.
DL_API int dl_set_ddr_bandwidth(void* h, int64_t beats_per_cycle_num, int64_t beats_per_cycle_den) {
    if (beats_per_cycle_num < 0 || beats_per_cycle_den < 1 || beats_per_cycle_den > (1ll << 30) ||
        beats_per_cycle_num > (1ll << 30))
        return -1;
    Sim* s = sim(h);
    s->ddr_num = beats_per_cycle_num;
    s->ddr_den = beats_per_cycle_den;
    s->ddr_credit = s->ddr_den;
    return 0;
}

DL_API void dl_set_backpressure(void* h, uint32_t seed, int percent) {
    Sim* s = sim(h);
    s->stall_percent = std::clamp(percent, 0, 100);
    s->rng = 0x9E3779B97F4A7C15ull ^ (static_cast<uint64_t>(seed) * 0xBF58476D1CE4E5B9ull);
    if (s->rng == 0) s->rng = 1;
}

DL_API void dl_set_read_reorder(void* h, int enable) { sim(h)->reorder = enable != 0; }

// Bursts touching window offsets [lo, hi) answer `resp` (2 SLVERR, 3 DECERR) and are not performed.
// resp 0 or lo >= hi switches the injection off.
DL_API int dl_set_error_range(void* h, uint64_t lo, uint64_t hi, int resp) {
    if (resp < 0 || resp > 3) return -1;
    Sim* s = sim(h);
    s->err_lo = lo;
    s->err_hi = hi;
    s->err_resp = lo < hi ? resp : RESP_OKAY;
    return 0;
}

DL_API int dl_ddr_write(void* h, uint64_t offset, const uint8_t* data, uint64_t n) {
    Sim* s = sim(h);
    if (offset > s->size || n > s->size - offset) return -1;
    std::memcpy(s->mem + offset, data, n);
    return 0;
}

DL_API int dl_ddr_read(void* h, uint64_t offset, uint8_t* data, uint64_t n) {
    Sim* s = sim(h);
    if (offset > s->size || n > s->size - offset) return -1;
    std::memcpy(data, s->mem + offset, n);
    return 0;
}

// Full AXI4-Lite transactions; the response code (0 OKAY .. 3 DECERR), or -1 when the slave did not finish
// within 100000 cycles.
DL_API int dl_reg_write(void* h, uint32_t addr, uint32_t data) { return sim(h)->reg_write(addr, data); }

DL_API int dl_reg_read(void* h, uint32_t addr, uint32_t* data) { return sim(h)->reg_read(addr, data); }

DL_API uint64_t dl_run_until_irq(void* h, uint64_t max_cycles) { return sim(h)->run_until_irq(max_cycles); }

DL_API uint64_t dl_step(void* h, uint64_t cycles) { return sim(h)->step(cycles); }

DL_API int dl_irq(void* h) { return sim(h)->top->irq ? 1 : 0; }

DL_API uint64_t dl_cycles(void* h) { return sim(h)->cycle; }

DL_API uint64_t dl_protocol_errors(void* h) { return sim(h)->protocol_errors; }

DL_API const char* dl_last_protocol_error(void* h) { return sim(h)->last_error.c_str(); }

DL_API const char* dl_first_protocol_error(void* h) { return sim(h)->first_error.c_str(); }

// Counters: cycles, read beats, write beats, read bursts, write bursts, DECERR bursts (outside the window),
// bursts hit by the error range. Writes at most n values; returns how many exist.
DL_API int dl_stats(void* h, uint64_t* out, int n) {
    Sim* s = sim(h);
    const uint64_t values[] = {s->cycle,     s->rd_beats,      s->wr_beats,       s->rd_bursts,
                               s->wr_bursts, s->decode_errors, s->injected_errors};
    const int count = static_cast<int>(sizeof values / sizeof values[0]);
    for (int i = 0; i < std::min(n, count); ++i) out[i] = values[i];
    return count;
}

DL_API void dl_trace_flush(void* h) {
#if VM_TRACE
    if (sim(h)->tfp) sim(h)->tfp->flush();
#else
    (void)h;
#endif
}
