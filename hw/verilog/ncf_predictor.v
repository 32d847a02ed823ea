`timescale 1ns / 1ps
// ncf_predictor: a streaming wrapper (valid/ready in, valid/ready out) around the generated,
// free-running pipelined core `ncf_core_wrapper` (fixed latency CORE_LAT, one input per cycle,
// no enable, no reset). Written once by hand; every size is a parameter that `ncf rtl` puts in
// manifest.json, so nothing here is generated or patched.
//
// Interface (all synchronous to clk; a transfer happens on a rising edge where valid && ready):
//   rst        synchronous, active high: drops every prediction in flight and in the FIFO
//   in_valid / in_ready / in_data[IN_W-1:0]
//              one feature snapshot: bit k = live feature k of the site (manifest: live_inputs)
//   out_valid / out_ready
//   out_taken  the branch decision (branch logit > 0)
//   out_class  the prefetch delta class (index of the first largest delta logit)
//   out_logits N_LOGITS signed fixed-point logits, ELEM_W bits each, OUT_F fractional bits
//              (logit k at out_logits[k*ELEM_W +: ELEM_W]; k = 0 is the branch logit)
//
// Flow control: a credit counter (`count` = accepted, not yet delivered) admits an input only
// while count < DEPTH, so every prediction in flight already owns a FIFO slot: none is lost
// however long out_ready stays low, and the core never stalls. in_ready depends only on registers.
// Latency from the input transfer to the output transfer: CORE_LAT + 1 cycles (the FIFO write).
// A result occupies a credit for those CORE_LAT + 1 cycles and the next input is admitted in the
// same cycle, so DEPTH >= CORE_LAT + 2 keeps one prediction per cycle while out_ready is high.
module ncf_predictor #(
    parameter IN_W     = 8,    // live feature bits
    parameter ELEM_W   = 16,   // width of one core output element
    parameter OUT_F    = 8,    // fractional bits of the core output elements
    parameter N_LOGITS = 17,   // branch logit + delta-class logits
    parameter CLASS_W  = 4,    // bits of the delta class index
    parameter CORE_LAT = 4     // core latency in cycles (>= 1)
) (
    input                          clk,
    input                          rst,
    input                          in_valid,
    output                         in_ready,
    input  [IN_W-1:0]              in_data,
    output                         out_valid,
    input                          out_ready,
    output                         out_taken,
    output [CLASS_W-1:0]           out_class,
    output [N_LOGITS*ELEM_W-1:0]   out_logits
);
    localparam N_ELEM = N_LOGITS + 2;         // core outputs: taken, class, logits
    localparam CORE_W = N_ELEM * ELEM_W;
    localparam AW     = $clog2(CORE_LAT + 2);  // FIFO address bits: DEPTH >= CORE_LAT + 2
    localparam DEPTH  = 1 << AW;
    localparam FIFO_W = 1 + CLASS_W + N_LOGITS * ELEM_W;

    wire in_fire  = in_valid && in_ready;
    wire out_fire = out_valid && out_ready;

    wire [CORE_W-1:0] core_out;
    ncf_core_wrapper core (.clk(clk), .model_inp(in_data), .model_out(core_out));

    // which core outputs are real predictions
    reg [CORE_LAT-1:0] live;
    generate
        if (CORE_LAT == 1) begin : g_live1
            always @(posedge clk) live <= rst ? 1'b0 : in_fire;
        end else begin : g_liven
            always @(posedge clk) live <= rst ? {CORE_LAT{1'b0}} : {live[CORE_LAT-2:0], in_fire};
        end
    endgenerate

    // credits
    reg [AW:0] count;
    assign in_ready = (count < DEPTH);
    always @(posedge clk)
        if (rst) count <= 0;
        else     count <= count + {{AW{1'b0}}, in_fire} - {{AW{1'b0}}, out_fire};

    // the decoded result: element 0 is 1.0 or 0 (taken), element 1 the class index (integer)
    wire [FIFO_W-1:0] result = {core_out[2*ELEM_W +: N_LOGITS*ELEM_W],
                                core_out[ELEM_W + OUT_F +: CLASS_W],
                                core_out[OUT_F]};

    // output FIFO; pointers carry one wrap bit (empty <=> equal)
    reg [FIFO_W-1:0] mem [0:DEPTH-1];
    reg [AW:0] wp, rp;
    always @(posedge clk) begin
        if (live[CORE_LAT-1]) mem[wp[AW-1:0]] <= result;
        if (rst) begin
            wp <= 0;
            rp <= 0;
        end else begin
            wp <= wp + {{AW{1'b0}}, live[CORE_LAT-1]};
            rp <= rp + {{AW{1'b0}}, out_fire};
        end
    end
    wire [FIFO_W-1:0] head = mem[rp[AW-1:0]];
    assign out_valid  = (wp != rp);
    assign out_taken  = head[0];
    assign out_class  = head[1 +: CLASS_W];
    assign out_logits = head[1 + CLASS_W +: N_LOGITS*ELEM_W];
endmodule
