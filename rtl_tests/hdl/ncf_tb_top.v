`timescale 1ns / 1ps
// Simulation top of the cocotb testbench: ncf_predictor plus an HDL-side stream source and sink.
//
// stream = 0: the predictor's ports are the top's ports; the Python driver/monitor handle every
//             cycle (protocol tests: latency, gaps, backpressure, reset).
// stream = 1: a source feeds stream_in.hex (NCF_N rows, +NCF_N=<n> plusarg) back to back with
//             out_ready high, and a sink stores every result; after the last one the sink is
//             written to stream_out.hex and `done` rises. Python waits for `done` and compares the
//             whole file with the integer reference: it stays off the per-cycle path (speed).
//             stream_cycles counts the clock edges from the first input transfer to the last
//             output transfer (n + latency when one result leaves per cycle).
// NCF_GATE_LEVEL defined: ncf_predictor is the gate-level netlist of `ncf synth` (no parameters).
module ncf_tb_top #(
    parameter IN_W = 8, ELEM_W = 16, OUT_F = 8, N_LOGITS = 17, CLASS_W = 4, CORE_LAT = 4,
    parameter MAX_N = 1024
) (
    input                         clk,
    input                         rst,
    input                         stream,
    input                         in_valid,
    output                        in_ready,
    input  [IN_W-1:0]             in_data,
    output                        out_valid,
    input                         out_ready,
    output                        out_taken,
    output [CLASS_W-1:0]          out_class,
    output [N_LOGITS*ELEM_W-1:0]  out_logits,
    output reg                    done,
    output reg [31:0]             stream_cycles
);
    localparam RES_W = 1 + CLASS_W + N_LOGITS * ELEM_W;

    reg [IN_W-1:0]  src  [0:MAX_N-1];
    reg [RES_W-1:0] sink [0:MAX_N-1];
    integer n;
    initial begin
        if (!$value$plusargs("NCF_N=%d", n)) n = 0;
        if (n > MAX_N) begin
            $display("ncf_tb_top: NCF_N=%0d exceeds MAX_N=%0d", n, MAX_N);
            $finish;
        end
        if (n > 0) $readmemh("stream_in.hex", src, 0, n - 1);
    end

    reg [31:0] i, j;
    reg written;
    wire p_in_valid  = stream ? (i < n && !done) : in_valid;
    wire [IN_W-1:0] p_in_data = stream ? src[i[$clog2(MAX_N)-1:0]] : in_data;
    wire p_out_ready = stream ? 1'b1 : out_ready;

    ncf_predictor
`ifndef NCF_GATE_LEVEL  // a post-synthesis netlist has its sizes built in, and no parameters
        #(.IN_W(IN_W), .ELEM_W(ELEM_W), .OUT_F(OUT_F), .N_LOGITS(N_LOGITS), .CLASS_W(CLASS_W), .CORE_LAT(CORE_LAT))
`endif
        dut (
        .clk(clk), .rst(rst),
        .in_valid(p_in_valid), .in_ready(in_ready), .in_data(p_in_data),
        .out_valid(out_valid), .out_ready(p_out_ready),
        .out_taken(out_taken), .out_class(out_class), .out_logits(out_logits));

    always @(posedge clk) begin
        if (rst || !stream) begin
            i <= 0;
            j <= 0;
            done <= 0;
            written <= 0;
            stream_cycles <= 0;
        end else if (!done) begin
            if (i != 0 || (p_in_valid && in_ready)) stream_cycles <= stream_cycles + 1;
            if (p_in_valid && in_ready) i <= i + 1;
            if (out_valid) begin
                sink[j[$clog2(MAX_N)-1:0]] <= {out_logits, out_class, out_taken};
                j <= j + 1;
                if (j + 1 == n) done <= 1;
            end
        end else if (!written) begin
            $writememh("stream_out.hex", sink, 0, n - 1);
            written <= 1;
        end
    end
endmodule
