`timescale 1ns / 1ps
// ncf_pnr_top: place-and-route harness around ncf_predictor, for `ncf synth` only (not part of the
// product interface). The predictor's IN_W-bit input bus and its N_LOGITS*ELEM_W-bit output bus do
// not fit the package pins (a few hundred bits vs ~200 user I/Os), so:
//   * in_data is loaded through a SER_W-bit shift register `sr` (adds IN_W flip-flops, no LUTs);
//   * only out_taken, out_class and the XOR of all logit bits leave the chip (the XOR keeps every
//     logit bit alive, so synthesis removes nothing of the core).
// The reported Fmax is therefore register-to-register: sr -> core -> FIFO. I/O paths are not
// constrained. Every size is a parameter (the same ones as ncf_predictor, from manifest.json).
// The predictor instance keeps its own module through synthesis (keep_hierarchy): `ncf synth` writes
// that module as the gate-level netlist `ncf verify --netlist` simulates, the one that is placed.
module ncf_pnr_top #(
    parameter IN_W     = 8,
    parameter ELEM_W   = 16,
    parameter OUT_F    = 8,
    parameter N_LOGITS = 17,
    parameter CLASS_W  = 4,
    parameter CORE_LAT = 4,
    parameter SER_W    = 8     // input pins of the shift register
) (
    input                clk,
    input                rst,
    input  [SER_W-1:0]   ser_in,
    input                in_valid,
    output               in_ready,
    output               out_valid,
    input                out_ready,
    output               out_taken,
    output [CLASS_W-1:0] out_class,
    output               out_logits_xor
);
    reg [IN_W-1:0] sr;
    generate
        if (IN_W > SER_W) begin : g_shift
            always @(posedge clk) sr <= {sr[IN_W-SER_W-1:0], ser_in};
        end else begin : g_load
            always @(posedge clk) sr <= ser_in[IN_W-1:0];
        end
    endgenerate

    wire [N_LOGITS*ELEM_W-1:0] logits;
    (* keep_hierarchy *) ncf_predictor #(
        .IN_W(IN_W), .ELEM_W(ELEM_W), .OUT_F(OUT_F), .N_LOGITS(N_LOGITS), .CLASS_W(CLASS_W),
        .CORE_LAT(CORE_LAT)
    ) dut (
        .clk(clk), .rst(rst),
        .in_valid(in_valid), .in_ready(in_ready), .in_data(sr),
        .out_valid(out_valid), .out_ready(out_ready),
        .out_taken(out_taken), .out_class(out_class), .out_logits(logits)
    );
    assign out_logits_xor = ^logits;
endmodule
