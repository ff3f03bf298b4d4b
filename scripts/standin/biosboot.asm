; rescuekit stand-in for etfsboot.com (NOT Microsoft's boot sector).
;
; Loaded exactly like etfsboot.com: El Torito no-emulation boot image, 8 x 512-byte sectors (4 KiB) at
; 0000:7C00, DL = BIOS drive number of the CD, and NO boot info table (nothing is patched into us).
; So, like etfsboot.com, it finds files on the disc by itself: it reads the ISO 9660 Primary Volume
; Descriptor at LBA 16 with int 13h extensions (2048-byte sectors), walks the root directory, reads
; NONCE.TXT and prints markers to COM1 (UART programmed directly) and to the screen (int 10h):
;   RESCUEKIT STAND-IN BIOS / NONCE=<content> / RESCUEKIT BIOS OK     or   RESCUEKIT BIOS FAIL <reason>
; then halts.  It also fails when it was loaded short (< 8 x 512 bytes) or with a boot info table patched in,
; the two ways an ISO writer can break the real etfsboot.com.  Build: nasm -f bin -o etfsboot.com biosboot.asm

bits 16
org 0x7C00

%define INFO_FILL "RESCUEKIT: no boot info table may be patched over this!!"  ; 56 bytes: offsets 8-63
COM1      equ 0x3F8
SECTOR    equ 2048
PVD_BUF   equ 0x9000          ; 2 KiB buffers above our 4 KiB image (0x7C00-0x8BFF)
DIR_BUF   equ 0x9800
FILE_BUF  equ 0xA000
MAX_NONCE equ 200             ; print at most this many bytes of NONCE.TXT

start:
    cli
    jmp short setup

; Offsets 8-63 are where a boot info table would be patched in (mkisofs -boot-info-table). etfsboot.com gets none,
; so this filler must arrive intact; main checks it against the copy at the end of the image.
    times 8 - ($ - $$) db 0x90
info_table_slot:
    db INFO_FILL

%if $ - $$ != 64
%error "boot info table slot must end at offset 64"
%endif
setup:
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, 0x7C00
    jmp 0x0000:main           ; normalise CS:IP (some BIOSes jump to 07C0:0000)

main:
    sti
    cld
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

    ; All 8 x 512 bytes loaded?  The last 4 bytes of the image are a signature.
    cmp dword [tail_sig], TAIL_SIG
    jne .short_load
    ; Offsets 8-63 unpatched?
    mov si, info_table_slot
    mov di, info_table_copy
    mov cx, 56
    repe cmpsb
    jne .patched

    ; int 13h extensions present for this drive?
    mov ah, 0x41
    mov bx, 0x55AA
    mov dl, [drive]
    int 0x13
    jc .no_ext
    cmp bx, 0xAA55
    jne .no_ext

    ; Primary Volume Descriptor at LBA 16: type 1, "CD001".
    mov eax, 16
    mov di, PVD_BUF
    call read_sector
    cmp byte [PVD_BUF], 1
    jne .no_pvd
    mov si, PVD_BUF + 1
    mov di, cd001
    mov cx, 5
    repe cmpsb
    jne .no_pvd

    ; Root directory record at offset 156: extent LBA at +2, data length at +10 (little-endian halves).
    mov eax, [PVD_BUF + 156 + 2]
    mov [dir_lba], eax
    mov eax, [PVD_BUF + 156 + 10]
    add eax, SECTOR - 1
    shr eax, 11
    mov [dir_left], eax

.next_dir_sector:
    cmp dword [dir_left], 0
    je .not_found
    mov eax, [dir_lba]
    mov di, DIR_BUF
    call read_sector
    inc dword [dir_lba]
    dec dword [dir_left]
    mov bx, DIR_BUF

.next_record:
    cmp bx, DIR_BUF + SECTOR
    jae .next_dir_sector
    movzx ax, byte [bx]       ; record length; 0 = rest of this sector is padding
    test ax, ax
    jz .next_dir_sector
    test byte [bx + 25], 2    ; skip directories
    jnz .skip
    call name_matches
    je .found
.skip:
    add bx, ax
    jmp .next_record

.found:
    mov eax, [bx + 10]        ; file size
    cmp eax, MAX_NONCE
    jbe .size_ok
    mov eax, MAX_NONCE
.size_ok:
    mov [nonce_len], ax
    mov eax, [bx + 2]         ; file extent LBA
    mov di, FILE_BUF
    call read_sector

    mov si, msg_nonce
    call print
    mov si, FILE_BUF
    mov cx, [nonce_len]
.nonce_char:
    jcxz .nonce_done
    lodsb
    cmp al, 13                ; first line only
    je .nonce_done
    cmp al, 10
    je .nonce_done
    cmp al, 0
    je .nonce_done
    call putc
    dec cx
    jmp .nonce_char
.nonce_done:
    mov si, crlf
    call print
    mov si, msg_ok
    call print
    jmp halt

.short_load:
    mov si, err_short
    jmp fail
.patched:
    mov si, err_patched
    jmp fail
.no_ext:
    mov si, err_ext
    jmp fail
.no_pvd:
    mov si, err_pvd
    jmp fail
.not_found:
    mov si, err_nf
    ; fall through

; fail: SI = reason
fail:
    push si
    mov si, msg_fail
    call print
    pop si
    call print
    mov si, crlf
    call print
halt:
    cli
.l: hlt
    jmp .l

; name_matches: BX = directory record. ZF=1 when its name is NONCE.TXT, case-insensitive,
; with or without a ";<version>" suffix.  Preserves AX, BX.
name_matches:
    push ax
    movzx cx, byte [bx + 32]  ; name length
    cmp cx, target_len
    jb .no
    lea si, [bx + 33]
    mov di, target
    mov cx, target_len
.cmp:
    lodsb
    cmp al, 'a'
    jb .upper
    cmp al, 'z'
    ja .upper
    sub al, 'a' - 'A'
.upper:
    cmp al, [di]
    jne .no
    inc di
    loop .cmp
    ; all target chars matched: the name must end here or continue with ';'
    movzx cx, byte [bx + 32]
    cmp cx, target_len
    je .yes
    cmp byte [si], ';'
    je .yes
.no:
    or al, 1                  ; ZF=0 (AL is never 0 after "or 1")
    pop ax
    ret
.yes:
    xor cx, cx                ; ZF=1
    pop ax
    ret

; read_sector: EAX = LBA, DI = destination offset (segment 0). One 2048-byte sector. Fails the boot on error.
read_sector:
    pushad
    mov word [dap_count], 1
    mov [dap_off], di
    mov word [dap_seg], 0
    mov [dap_lba], eax
    mov dword [dap_lba + 4], 0
    mov si, dap
    mov dl, [drive]
    mov ah, 0x42
    int 0x13
    jc .err
    popad
    ret
.err:
    mov [err_code], ah
    mov si, err_read
    call print
    mov al, [err_code]
    call print_hex8
    mov si, crlf
    call print
    mov si, err_io
    jmp fail

uart_init:
    mov dx, COM1 + 1
    xor al, al
    out dx, al                ; IER: no interrupts
    mov dx, COM1 + 3
    mov al, 0x80
    out dx, al                ; LCR: DLAB on
    mov dx, COM1
    mov al, 1
    out dx, al                ; divisor 1 = 115200 baud
    inc dx
    xor al, al
    out dx, al
    mov dx, COM1 + 3
    mov al, 3
    out dx, al                ; 8N1, DLAB off
    mov dx, COM1 + 2
    mov al, 0xC7
    out dx, al                ; FIFO on, cleared
    mov dx, COM1 + 4
    mov al, 0x0B
    out dx, al                ; DTR, RTS, OUT2
    ret

; putc: AL to COM1 and to the screen.  Preserves all registers.
putc:
    pusha
    mov bl, al
    mov dx, COM1 + 5
    mov cx, 0xFFFF            ; don't hang forever when there is no UART
.wait:
    in al, dx
    test al, 0x20
    jnz .send
    loop .wait
.send:
    mov dx, COM1
    mov al, bl
    out dx, al
    mov ah, 0x0E
    mov bh, 0
    mov al, bl
    int 0x10
    popa
    ret

; print: zero-terminated string at SI.
print:
    push ax
    push si
.l:
    lodsb
    test al, al
    jz .done
    call putc
    jmp .l
.done:
    pop si
    pop ax
    ret

; print_hex8: AL as two hex digits.
print_hex8:
    push ax
    shr al, 4
    call .nib
    pop ax
    and al, 0x0F
.nib:
    add al, '0'
    cmp al, '9'
    jbe .out
    add al, 'A' - '0' - 10
.out:
    jmp putc

msg_hello db 13, 10, "RESCUEKIT STAND-IN BIOS (rescuekit test boot program, NOT Windows etfsboot.com)", 13, 10, 0
msg_drive db "boot drive 0x", 0
msg_nonce db "NONCE=", 0
msg_ok    db "RESCUEKIT BIOS OK", 13, 10, 0
msg_fail  db "RESCUEKIT BIOS FAIL ", 0
err_short db "only part of the 4 KiB boot image was loaded (El Torito load size must be 8 x 512 bytes)", 0
err_patched db "bytes 8-63 of the boot image were overwritten (a boot info table was patched in)", 0
err_ext   db "no int 13h extensions for the boot drive", 0
err_pvd   db "no ISO 9660 primary volume descriptor at LBA 16", 0
err_nf    db "NONCE.TXT not found in the ISO 9660 root directory", 0
err_read  db "int 13h AH=42h read error 0x", 0
err_io    db "disc read error", 0
crlf      db 13, 10, 0
cd001     db "CD001"
target    db "NONCE.TXT"
target_len equ $ - target

align 4
dap:
          db 0x10, 0
dap_count dw 1
dap_off   dw 0
dap_seg   dw 0
dap_lba   dq 0

drive     db 0
err_code  db 0
nonce_len dw 0
dir_lba   dd 0
dir_left  dd 0

; Pad to 4096 bytes: the size of etfsboot.com, loaded by El Torito as 8 x 512-byte sectors.  The second half
; holds the reference copy of offsets 8-63 and, in the last 4 bytes, the "all loaded" signature.
TAIL_SIG equ 0x444E4B52       ; "RKND"
times 2048 - ($ - $$) db 0
info_table_copy:
    db INFO_FILL
times 4092 - ($ - $$) db 0
tail_sig dd TAIL_SIG
