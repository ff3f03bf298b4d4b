; rescuekit stand-in for bootmgr (NOT Microsoft's boot manager).
;
; On a USB stick (rescuekit usb) the BIOS chain is: MBR boot code (syslinux mbr.bin) -> the active FAT32
; partition's boot sector (syslinux) -> ldlinux -> chain.c32 "fs ntldr=/bootmgr", which loads this file at
; 2000:0000 and jumps there with the partition's boot sector (BPB) at 0000:7C00 and DL = the BIOS drive, the way a
; Windows FAT32 boot sector (bootsect /nt60) starts the real bootmgr.  So this program checks what bootmgr relies
; on and prints, to COM1 (UART programmed directly) and the screen (int 10h):
;   RESCUEKIT STAND-IN BOOTMGR / boot drive 0x80 / VBR=FAT32 hidden sectors 0x00000800 / NONCE=<built in> /
;   RESCUEKIT BIOS OK          or          RESCUEKIT BIOS FAIL <reason>
; then halts.  NONCE is assembled in (nasm -DNONCE='"..."'): the text can only come from this stick's bootmgr.
; The first line of the file is text, so the CD stand-in (biosboot.asm), which prints BOOTMGR's first line, shows it.
; Build: nasm -f bin -DNONCE='"RK-..."' -o bootmgr bootmgr.asm

bits 16
org 0

%ifndef NONCE
%define NONCE "none"
%endif
COM1 equ 0x3F8

    jmp short start
    db " RESCUEKIT STAND-IN placeholder for bootmgr (BIOS boot manager; a test program, NOT Windows)", 13, 10
start:
    cli
    xor ax, ax
    mov ss, ax
    mov sp, 0x7000            ; below the boot sector at 0000:7C00
    mov ax, cs
    mov ds, ax
    sti
    mov [drive], dl
    call uart_init
    mov si, msg_hello
    call print
    mov si, msg_drive
    call print
    mov al, [drive]
    call print_hex8
    mov si, crlf
    call print
    ; The partition boot sector: a FAT32 BPB ("FAT32   " at 0x52) whose hidden sectors say where it starts.
    push ds
    xor ax, ax
    mov es, ax
    pop ds
    mov di, 0x7C52
    mov si, fat32
    mov cx, 8
    repe cmpsb
    jne .no_fat32
    cmp word [es:0x7DFE], 0xAA55
    jne .no_fat32
    mov si, msg_vbr
    call print
    mov eax, [es:0x7C1C]
    call print_hex32
    mov si, crlf
    call print
    mov si, msg_nonce
    call print
    mov si, msg_ok
    call print
    jmp halt
.no_fat32:
    mov si, msg_fail
    call print
    mov si, err_vbr
    call print
halt:
    cli
    hlt
    jmp halt

%include "serial.inc"

drive     db 0
fat32     db "FAT32   "
msg_hello db 13, 10, "RESCUEKIT STAND-IN BOOTMGR (rescuekit test program, NOT Windows bootmgr)", 13, 10, 0
msg_drive db "boot drive 0x", 0
msg_vbr   db "VBR=FAT32 hidden sectors 0x", 0
msg_nonce db "NONCE=", NONCE, 13, 10, 0
msg_ok    db "RESCUEKIT BIOS OK", 13, 10, 0
msg_fail  db "RESCUEKIT BIOS FAIL ", 0
err_vbr   db "no FAT32 boot sector at 0000:7C00 (bootmgr needs the partition's BPB there)", 13, 10, 0
crlf      db 13, 10, 0
