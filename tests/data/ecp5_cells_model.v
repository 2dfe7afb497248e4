// Behavioural models of the ECP5 cells metafab instantiates when it elaborates for an ECP5:
// TRELLIS_FF (metafab.hw.fixed.replicated_register), MULT18X18D (registered_product) and DCCA
// (global_net).
//
// MULT18X18D, the sysDSP multiplier: what the project
// uses: the 18x18 product with SIGNEDA/SIGNEDB, optional input registers (REG_INPUTA/B_CLK)
// and output register (REG_OUTPUT_CLK) on CLK0 with clock enable CE0 and synchronous reset RST0.
// Other settings (CLK1-3, the pipeline register, the shift chains) are refused at time 0.
module MULT18X18D(A0, A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12, A13, A14, A15, A16, A17, B0, B1, B2, B3, B4, B5, B6, B7, B8, B9, B10, B11, B12, B13, B14, B15, B16, B17, C0, C1, C2, C3, C4, C5, C6, C7, C8, C9, C10, C11, C12, C13, C14, C15, C16, C17, SIGNEDA, SIGNEDB, SOURCEA, SOURCEB, CLK0, CLK1, CLK2, CLK3, CE0, CE1, CE2, CE3, RST0, RST1, RST2, RST3, P0, P1, P2, P3, P4, P5, P6, P7, P8, P9, P10, P11, P12, P13, P14, P15, P16, P17, P18, P19, P20, P21, P22, P23, P24, P25, P26, P27, P28, P29, P30, P31, P32, P33, P34, P35);
    parameter REG_INPUTA_CLK = "NONE";
    parameter REG_INPUTA_CE = "CE0";
    parameter REG_INPUTA_RST = "RST0";
    parameter REG_INPUTB_CLK = "NONE";
    parameter REG_INPUTB_CE = "CE0";
    parameter REG_INPUTB_RST = "RST0";
    parameter REG_INPUTC_CLK = "NONE";
    parameter REG_INPUTC_CE = "CE0";
    parameter REG_INPUTC_RST = "RST0";
    parameter REG_PIPELINE_CLK = "NONE";
    parameter REG_PIPELINE_CE = "CE0";
    parameter REG_PIPELINE_RST = "RST0";
    parameter REG_OUTPUT_CLK = "NONE";
    parameter REG_OUTPUT_CE = "CE0";
    parameter REG_OUTPUT_RST = "RST0";
    parameter GSR = "ENABLED";
    parameter RESETMODE = "SYNC";
    parameter MULT_BYPASS = "DISABLED";
    parameter SOURCEB_MODE = "B_SHIFT";
    parameter HIGHSPEED_CLK = "NONE";
    parameter CAS_MATCH_REG = "FALSE";
    parameter CLK0_DIV = "ENABLED";
    parameter CLK1_DIV = "ENABLED";
    parameter CLK2_DIV = "ENABLED";
    parameter CLK3_DIV = "ENABLED";
    input A0, A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12, A13, A14, A15, A16, A17, B0, B1, B2, B3, B4, B5, B6, B7, B8, B9, B10, B11, B12, B13, B14, B15, B16, B17, C0, C1, C2, C3, C4, C5, C6, C7, C8, C9, C10, C11, C12, C13, C14, C15, C16, C17, SIGNEDA, SIGNEDB, SOURCEA, SOURCEB, CLK0, CLK1, CLK2, CLK3, CE0, CE1, CE2, CE3, RST0, RST1, RST2, RST3;
    output P0, P1, P2, P3, P4, P5, P6, P7, P8, P9, P10, P11, P12, P13, P14, P15, P16, P17, P18, P19, P20, P21, P22, P23, P24, P25, P26, P27, P28, P29, P30, P31, P32, P33, P34, P35;
    wire [17:0] a_in = {A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0};
    wire [17:0] b_in = {B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0};
    reg [17:0] a_r = 18'd0, b_r = 18'd0;
    reg sa_r = 1'b0, sb_r = 1'b0;
    reg [35:0] p_r = 36'd0;
    always @(posedge CLK0) begin
        if (RST0) begin a_r <= 18'd0; b_r <= 18'd0; sa_r <= 1'b0; sb_r <= 1'b0; end
        else if (CE0) begin a_r <= a_in; b_r <= b_in; sa_r <= SIGNEDA; sb_r <= SIGNEDB; end
    end
    wire in_reg_a = REG_INPUTA_CLK == "CLK0";
    wire in_reg_b = REG_INPUTB_CLK == "CLK0";
    wire [17:0] a_op = in_reg_a ? a_r : a_in;
    wire [17:0] b_op = in_reg_b ? b_r : b_in;
    wire sa = in_reg_a ? sa_r : SIGNEDA;
    wire sb = in_reg_b ? sb_r : SIGNEDB;
    wire signed [36:0] a_ext = {{19{sa & a_op[17]}}, a_op};
    wire signed [36:0] b_ext = {{19{sb & b_op[17]}}, b_op};
    wire signed [73:0] prod = a_ext * b_ext;
    always @(posedge CLK0) begin
        if (RST0) p_r <= 36'd0;
        else if (CE0) p_r <= prod[35:0];
    end
    assign {P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19, P18, P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0} = REG_OUTPUT_CLK == "CLK0" ? p_r : prod[35:0];
    initial begin
        if ((REG_INPUTA_CLK != "NONE" && REG_INPUTA_CLK != "CLK0") || (REG_INPUTB_CLK != "NONE" && REG_INPUTB_CLK != "CLK0")
            || (REG_OUTPUT_CLK != "NONE" && REG_OUTPUT_CLK != "CLK0") || REG_PIPELINE_CLK != "NONE"
            || REG_INPUTA_CE != "CE0" || REG_INPUTB_CE != "CE0" || REG_OUTPUT_CE != "CE0"
            || REG_INPUTA_RST != "RST0" || REG_INPUTB_RST != "RST0" || REG_OUTPUT_RST != "RST0"
            || RESETMODE != "SYNC" || MULT_BYPASS != "DISABLED") begin
            $display("MULT18X18D model: unsupported configuration");
            $finish;
        end
    end
endmodule

// TRELLIS_FF, a fabric flip-flop: the configuration replicated_register uses (clock enable tied
// high, synchronous reset to 0 on LSR); other settings are refused at time 0.
module TRELLIS_FF(CLK, LSR, CE, DI, M, Q);
    parameter GSR = "ENABLED";
    parameter CEMUX = "1";
    parameter CLKMUX = "CLK";
    parameter LSRMUX = "LSR";
    parameter SRMODE = "LSR_OVER_CE";
    parameter REGSET = "RESET";
    parameter LSRMODE = "LSR";
    input CLK, LSR, CE, DI, M;
    output reg Q = 1'b0;
    always @(posedge CLK) Q <= LSR ? 1'b0 : DI;
    initial begin
        if (CEMUX != "1" || CLKMUX != "CLK" || LSRMUX != "LSR" || SRMODE != "LSR_OVER_CE" || REGSET != "RESET") begin
            $display("TRELLIS_FF model: unsupported configuration");
            $finish;
        end
    end
endmodule

// DCCA, a primary clock network buffer with clock enable (metafab.hw.fixed.global_net drives a
// reset through one): CLKO follows CLKI while CE is high.
module DCCA(input CLKI, input CE, output CLKO);
    assign CLKO = CLKI & CE;
endmodule
