/* _start for the trace_eval kernels: kmain(argc, argv), then exit(kmain's return) by syscall.
 * At entry the kernel (or qemu-user) leaves argc at (%rsp) and argv[] right above it. */
    .text
    .globl _start
    .type _start, @function
_start:
    xor     %ebp, %ebp          /* outermost frame */
    mov     (%rsp), %rdi        /* argc */
    lea     8(%rsp), %rsi       /* argv */
    and     $-16, %rsp          /* ABI: 16-byte aligned before the call */
    call    kmain
    mov     %eax, %edi          /* exit status */
    mov     $60, %eax           /* SYS_exit */
    syscall
    hlt
    .size _start, .-_start
    .section .note.GNU-stack, "", @progbits
