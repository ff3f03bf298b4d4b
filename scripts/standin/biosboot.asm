; rescuekit stand-in for etfsboot.com (NOT Microsoft's boot sector).
;
; Loaded exactly like etfsboot.com: El Torito no-emulation boot image, 8 x 512-byte sectors (4 KiB) at
; 0000:7C00, DL = BIOS drive number of the CD, and NO boot info table (nothing is patched into us).
; So, like etfsboot.com, it finds BOOTMGR on the disc by itself, reading 2048-byte sectors with int 13h AH=42h:
;
; - UDF first, when there is an Anchor Volume Descriptor Pointer at sector 256 (ECMA-167 3/10.2): main Volume
;   Descriptor Sequence -> Partition Descriptor (start) + Logical Volume Descriptor (File Set Descriptor address)
;   -> File Set Descriptor -> root File Entry -> File Identifier Descriptors; names compared case-insensitively;
;   BOOTMGR must have a plain File Entry (tag 261, not the Extended 266) with ONE short/long allocation descriptor
;   covering the whole file.  With a UDF anchor there is no fallback to ISO 9660.
; - ISO 9660 only when there is no UDF: the Primary Volume Descriptor at sector 16, the root directory, and the
;   identifier compared byte-exact: "BOOTMGR" (no ";1", no dot, upper case; KB931708).
;
; Then, on the same file system, it looks for \BOOT\BOOTFIX.BIN (what etfsboot.com runs to ask "Press any key to
; boot from CD or DVD"; looked up as for BOOTMGR) and reads NONCE.TXT (in place of the rest of the boot chain:
; bootmgr's own UDF/ETFS drivers ignore case, and its ETFS driver strips ";version" and a trailing dot).
; It prints to COM1 (UART programmed directly) and to the screen (int 10h):
;   RESCUEKIT STAND-IN BIOS / PATH=UDF|ISO9660 / BOOTMGR ... / BOOTFIX=present|absent / NONCE=<content> /
;   RESCUEKIT BIOS OK          or          RESCUEKIT BIOS FAIL <reason>
; then halts.  It also fails when it was loaded short (< 8 x 512 bytes) or with a boot info table patched in,
; the two ways an ISO writer can break the real etfsboot.com.  Build: nasm -f bin -o etfsboot.com biosboot.asm

bits 16
org 0x7C00

%define INFO_FILL "RESCUEKIT: no boot info table may be patched over this!!"  ; 56 bytes: offsets 8-63
COM1      equ 0x3F8
SECTOR    equ 2048
SEC_BUF   equ 0x9000          ; one sector, above our 4 KiB image (0x7C00-0x8BFF)
DIR_BUF   equ 0x9800          ; a whole UDF directory (FIDs may cross sectors): up to DIR_MAX sectors
DIR_MAX   equ 12              ; 0x9800 + 12 x 2048 = 0xF800, still in segment 0
MAX_TEXT  equ 200             ; print at most this many bytes of a file's first line
EXACT     equ 0               ; ISO 9660 lookup modes
FOLDED    equ 1

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

; Everything that can run when the BIOS loaded less than 4 KiB sits here, in the first 2048 bytes: the output
; routines and the messages main prints before it has checked the whole image arrived.
; fail_named: SI = reason; the file it is about is [cur_name].
fail_named:
    push si
    mov si, msg_fail
    call print
    pop si
    call print
    mov si, [cur_name]
    call print
    call newline
    jmp halt

; fail: SI = reason
fail:
    push si
    mov si, msg_fail
    call print
    pop si
    call print
    call newline
halt:
    cli
.l: hlt
    jmp .l

upcase:
    cmp al, 'a'
    jb .r
    cmp al, 'z'
    ja .r
    sub al, 'a' - 'A'
.r: ret

; read_sector: EAX = LBA, DI = destination offset (segment 0). One 2048-byte sector. Fails the boot on error.
read_sector:
    call read_sector_cf
    jc .err
    ret
.err:
    mov si, err_read
    call print
    mov al, [err_code]
    call print_hex8
    call newline
    mov si, err_io
    jmp fail

; read_sector_cf: as read_sector, but CF=1 (and [err_code]) on a read error.  Preserves all registers.
read_sector_cf:
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
    mov [err_code], ah
    popad
    ret

%include "serial.inc"

newline:
    push si
    mov si, crlf
    call print
    pop si
    ret

msg_hello db 13, 10, "RESCUEKIT STAND-IN BIOS (rescuekit test boot program, NOT Windows etfsboot.com)", 13, 10, 0
msg_drive db "boot drive 0x", 0
msg_fail  db "RESCUEKIT BIOS FAIL ", 0
err_short db "only part of the 4 KiB boot image was loaded (El Torito load size must be 8 x 512 bytes)", 0
crlf      db 13, 10, 0


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
    call newline

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

    ; UDF anchor at sector 256?  (tag identifier 2, valid tag checksum, tag location 256)
    mov eax, 256
    mov di, SEC_BUF
    call read_sector_cf       ; a disc shorter than 257 sectors has no UDF
    jc iso_path
    mov ax, 2
    mov ebx, 256
    call check_tag
    je udf_path
    jmp iso_path

.short_load:
    mov si, err_short
    jmp fail
.patched:
    mov si, err_patched
    jmp fail
.no_ext:
    mov si, err_ext
    jmp fail

; ---------------------------------------------------------------- UDF

udf_path:
    mov si, msg_path_udf
    call print
    mov eax, [SEC_BUF + 20]   ; main Volume Descriptor Sequence extent: length at 16, location at 20
    mov [vds_lba], eax
    mov eax, [SEC_BUF + 16]
    shr eax, 11
    mov [vds_left], eax
.vd:
    cmp dword [vds_left], 0
    je .vds_end
    mov eax, [vds_lba]
    mov di, SEC_BUF
    call read_sector
    inc dword [vds_lba]
    dec dword [vds_left]
    mov ax, [SEC_BUF]
    cmp ax, 8                 ; Terminating Descriptor
    je .vds_end
    cmp ax, 5                 ; Partition Descriptor: partition starting location at 188
    jne .not_pd
    mov eax, [SEC_BUF + 188]
    mov [part_start], eax
    or byte [have_vd], 1
    jmp .vd
.not_pd:
    cmp ax, 6                 ; Logical Volume Descriptor: contents use (long_ad of the FSD) at 248
    jne .vd
    mov eax, [SEC_BUF + 248 + 4]
    mov [fsd_lbn], eax
    or byte [have_vd], 2
    jmp .vd
.vds_end:
    cmp byte [have_vd], 3
    je .fsd
    mov si, err_vds
    jmp fail
.fsd:
    mov eax, [fsd_lbn]
    call read_lbn
    mov ax, 256
    mov ebx, [fsd_lbn]
    call check_tag
    je .fsd_ok
    mov si, err_fsd
    jmp fail
.fsd_ok:
    mov eax, [SEC_BUF + 400 + 4]  ; root directory ICB (long_ad)
    mov [root_icb], eax

    ; BOOTMGR in the root, case-insensitive, one extent
    mov si, name_bootmgr
    call udf_find
    jnc .have_mgr
    mov si, err_udf_mgr
    jmp fail
.have_mgr:
    test byte [fid_chars], 2
    jnz .mgr_dir
    mov word [cur_name], name_bootmgr
    call udf_file
    call show_bootmgr

    ; \BOOT\BOOTFIX.BIN
    mov eax, [root_icb]
    mov si, name_boot
    call udf_find
    jc .no_fix
    test byte [fid_chars], 2
    jz .no_fix
    mov si, name_bootfix
    call udf_find
    jc .no_fix
    mov word [cur_name], name_bootfix
    call udf_file
    call show_bootfix
    jmp .nonce
.no_fix:
    call show_no_bootfix
.nonce:
    mov eax, [root_icb]
    mov si, name_nonce
    call udf_find
    jnc .have_nonce
    mov si, err_udf_nonce
    jmp fail
.have_nonce:
    mov word [cur_name], name_nonce
    call udf_file
    jmp show_nonce
.mgr_dir:
    mov si, err_mgr_dir
    jmp fail

; read_lbn: EAX = logical block in the partition -> SEC_BUF.
read_lbn:
    add eax, [part_start]
    mov di, SEC_BUF
    jmp read_sector

; udf_file: EAX = ICB logical block of a File Entry.  Fails the boot unless it is a plain File Entry (tag 261)
; whose data is ONE recorded extent (one short_ad or long_ad) covering the whole file.
; Out: [file_lba] = absolute sector of the data, [file_len] = size in bytes.
udf_file:
    mov [icb_lbn], eax
    call read_lbn
    cmp word [SEC_BUF], 266
    je .efe
    mov ax, 261
    mov ebx, [icb_lbn]
    mov di, SEC_BUF
    call check_tag
    jne .bad_fe
    mov ax, [SEC_BUF + 34]    ; ICB tag flags: bits 0-2 = allocation descriptor type
    and ax, 7
    mov ecx, 8                ; short_ad
    cmp ax, 0
    je .ad_ok
    mov ecx, 16               ; long_ad
    cmp ax, 1
    jne .multi                ; extended ADs or data embedded in the entry
.ad_ok:
    cmp dword [SEC_BUF + 60], 0   ; information length (64 bits) at 56
    jne .multi
    mov eax, [SEC_BUF + 56]
    mov [file_len], eax
    mov dword [file_lba], 0
    mov edx, [SEC_BUF + 172]  ; L_AD
    test eax, eax
    jnz .not_empty
    cmp edx, ecx
    ja .multi
    ret
.not_empty:
    cmp edx, ecx              ; exactly one allocation descriptor
    jne .multi
    mov si, SEC_BUF + 176
    add si, [SEC_BUF + 168]   ; + L_EA
    mov eax, [si]             ; extent length; the top 2 bits (type) must be 0: recorded and allocated
    cmp eax, [file_len]
    jne .multi
    mov eax, [si + 4]
    add eax, [part_start]
    mov [file_lba], eax
    ret
.efe:
    mov si, err_efe
    jmp fail_named
.bad_fe:
    mov si, err_fe
    jmp fail_named
.multi:
    mov si, err_multi
    jmp fail_named

; udf_find: EAX = ICB logical block of a directory, SI = zero-terminated upper-case name.
; Out: CF=0 and EAX = ICB logical block of the entry, [fid_chars] = its file characteristics; CF=1 if absent.
udf_find:
    mov [want_name], si
    mov word [cur_name], name_dir
    call udf_file
    mov eax, [file_len]
    cmp eax, DIR_MAX * SECTOR
    jbe .size_ok
    mov si, err_bigdir
    jmp fail
.size_ok:
    mov [dir_end], ax
    add word [dir_end], DIR_BUF
    add eax, SECTOR - 1
    shr eax, 11
    mov cx, ax
    mov eax, [file_lba]
    mov di, DIR_BUF
.read:
    jcxz .scan
    call read_sector
    inc eax
    add di, SECTOR
    dec cx
    jmp .read
.scan:
    mov bx, DIR_BUF
.fid:
    mov ax, bx
    add ax, 38
    cmp ax, [dir_end]
    ja .absent
    cmp word [bx], 257        ; File Identifier Descriptor
    jne .bad_fid
    test byte [bx + 18], 0x0C ; deleted (4) or parent (8)
    jnz .next
    mov si, bx
    add si, 38
    add si, [bx + 36]         ; + L_IU
    movzx cx, byte [bx + 19]  ; L_FI
    call fid_name_matches
    je .found
.next:
    mov ax, [bx + 36]
    add ax, 38
    movzx cx, byte [bx + 19]
    add ax, cx
    add ax, 3
    and ax, 0xFFFC
    add bx, ax
    jmp .fid
.found:
    mov al, [bx + 18]
    mov [fid_chars], al
    mov eax, [bx + 20 + 4]    ; ICB long_ad: logical block number
    clc
    ret
.absent:
    stc
    ret
.bad_fid:
    mov si, err_fid
    jmp fail

; fid_name_matches: SI = OSTA compressed unicode name (compression ID 8 or 16 first), CX = its length.
; ZF=1 when it equals [want_name] ignoring case.  Preserves BX.
fid_name_matches:
    push di
    push dx
    jcxz .no
    lodsb
    dec cx
    mov dl, 1
    cmp al, 8
    je .count
    cmp al, 16
    jne .no
    mov dl, 2
    shr cx, 1
.count:
    mov di, [want_name]
.l:
    mov al, [di]
    test al, al
    jz .end
    jcxz .no
    cmp dl, 2
    jne .byte
    lodsb                     ; UTF-16 high byte must be 0 for our ASCII names
    test al, al
    jnz .no
.byte:
    lodsb
    call upcase
    cmp al, [di]
    jne .no
    inc di
    dec cx
    jmp .l
.end:
    test cx, cx               ; all of the name used?
    jnz .no
    xor ax, ax                ; ZF=1
    jmp .out
.no:
    or al, 1                  ; ZF=0
    or ax, 0xFF00
.out:
    pop dx
    pop di
    ret

; check_tag: DI = descriptor, AX = expected tag identifier, EBX = expected tag location.
; ZF=1 when identifier, location and tag checksum (ECMA-167 3/7.2.3) are right.
check_tag:
    push cx
    push si
    push bx
    cmp [di], ax
    jne .out
    cmp [di + 12], ebx
    jne .out
    mov bx, di
    xor cl, cl
    xor si, si
.sum:
    cmp si, 4
    je .skip
    add cl, [bx + si]
.skip:
    inc si
    cmp si, 16
    jb .sum
    cmp cl, [bx + 4]
.out:
    pop bx
    pop si
    pop cx
    ret

; ---------------------------------------------------------------- ISO 9660

iso_path:
    mov si, msg_path_iso
    call print
    mov eax, 16
    mov di, SEC_BUF
    call read_sector
    cmp byte [SEC_BUF], 1
    jne .no_pvd
    mov si, SEC_BUF + 1
    mov di, cd001
    mov cx, 5
    repe cmpsb
    jne .no_pvd
    ; Root directory record at offset 156: extent LBA at +2, data length at +10 (little-endian halves).
    mov eax, [SEC_BUF + 156 + 2]
    mov [root_lba], eax
    mov edx, [SEC_BUF + 156 + 10]
    mov [root_len], edx

    mov si, name_bootmgr
    mov byte [mode], EXACT
    call iso_find
    jnc .have_mgr
    mov si, err_iso_mgr
    jmp fail
.have_mgr:
    test bl, 2
    jnz .mgr_dir
    test bl, 0x80             ; multi-extent
    jnz .mgr_multi
    mov [file_lba], eax
    mov [file_len], edx
    call show_bootmgr

    mov eax, [root_lba]
    mov edx, [root_len]
    mov si, name_boot
    call iso_find
    jc .no_fix
    test bl, 2
    jz .no_fix
    mov si, name_bootfix
    call iso_find
    jc .no_fix
    mov [file_lba], eax
    mov [file_len], edx
    call show_bootfix
    jmp .nonce
.no_fix:
    call show_no_bootfix
.nonce:
    mov eax, [root_lba]
    mov edx, [root_len]
    mov si, name_nonce
    mov byte [mode], FOLDED   ; as bootmgr's ETFS driver: ";1" and a trailing dot stripped, case ignored
    call iso_find
    jnc .have_nonce
    mov si, err_iso_nonce
    jmp fail
.have_nonce:
    mov [file_lba], eax
    mov [file_len], edx
    jmp show_nonce
.no_pvd:
    mov si, err_pvd
    jmp fail
.mgr_dir:
    mov si, err_mgr_dir
    jmp fail
.mgr_multi:
    mov si, err_mgr_multi
    jmp fail

; iso_find: EAX = directory extent, EDX = its length, SI = zero-terminated upper-case name, [mode] EXACT/FOLDED.
; Out: CF=0, EAX = extent, EDX = data length, BL = file flags; CF=1 when absent.
iso_find:
    mov [want_name], si
    mov [dir_lba], eax
    add edx, SECTOR - 1
    shr edx, 11
    mov [dir_left], edx
.next_sector:
    cmp dword [dir_left], 0
    je .absent
    mov eax, [dir_lba]
    mov di, SEC_BUF
    call read_sector
    inc dword [dir_lba]
    dec dword [dir_left]
    mov bx, SEC_BUF
.next_record:
    cmp bx, SEC_BUF + SECTOR
    jae .next_sector
    movzx ax, byte [bx]       ; record length; 0 = rest of this sector is padding
    test ax, ax
    jz .next_sector
    call iso_name_matches
    je .found
    add bx, ax
    jmp .next_record
.found:
    mov eax, [bx + 2]
    mov edx, [bx + 10]
    mov bl, [bx + 25]
    clc
    ret
.absent:
    stc
    ret

; iso_name_matches: BX = directory record.  ZF=1 when its identifier is [want_name]: byte for byte in EXACT mode;
; in FOLDED mode ignoring case and a ";version" / trailing "." after it.  Preserves AX, BX.
iso_name_matches:
    push ax
    movzx cx, byte [bx + 32]  ; identifier length
    lea si, [bx + 33]
    mov di, [want_name]
.l:
    mov al, [di]
    test al, al
    jz .end
    jcxz .no
    lodsb
    cmp byte [mode], EXACT
    je .cmp
    call upcase
.cmp:
    cmp al, [di]
    jne .no
    inc di
    dec cx
    jmp .l
.end:
    jcxz .yes                 ; identifier used up: a match in both modes
    cmp byte [mode], EXACT
    je .no
    cmp byte [si], '.'        ; FOLDED: "NAME." or "NAME.;1" or "NAME;1"
    jne .semi
    inc si
    dec cx
    jcxz .yes
.semi:
    cmp byte [si], ';'
    je .yes
.no:
    or al, 1                  ; ZF=0
    or ax, 0xFF00
    pop ax
    ret
.yes:
    xor cx, cx                ; ZF=1
    pop ax
    ret

; ---------------------------------------------------------------- output

; show_bootmgr: [file_lba]/[file_len] = BOOTMGR.  Prints where it is and its first line.
show_bootmgr:
    mov si, msg_mgr
    call print
    call show_extent
    mov si, msg_mgr_text
    jmp show_text

show_bootfix:
    mov si, msg_fix_yes
    call print
    call show_extent
    ret

show_no_bootfix:
    mov si, msg_fix_no
    jmp print

; show_nonce: [file_lba]/[file_len] = NONCE.TXT; prints NONCE=<first line> and the OK marker, halts.
show_nonce:
    mov si, msg_nonce
    call show_text
    mov si, msg_ok
    call print
    jmp halt

; show_extent: " one extent, 0x<len> bytes at sector 0x<lba>" + newline.
show_extent:
    mov si, msg_ext1
    call print
    mov eax, [file_len]
    call print_hex32
    mov si, msg_ext2
    call print
    mov eax, [file_lba]
    call print_hex32
    jmp newline

; show_text: SI = prefix; prints it and the first line of the file at [file_lba] (at most MAX_TEXT bytes).
show_text:
    call print
    mov eax, [file_lba]
    mov di, SEC_BUF
    call read_sector
    mov ecx, [file_len]
    cmp ecx, MAX_TEXT
    jbe .len_ok
    mov cx, MAX_TEXT
.len_ok:
    mov si, SEC_BUF
.c:
    jcxz .done
    lodsb
    cmp al, 13                ; first line only
    je .done
    cmp al, 10
    je .done
    cmp al, 0
    je .done
    call putc
    dec cx
    jmp .c
.done:
    jmp newline

msg_path_udf db "PATH=UDF (anchor at sector 256; names matched ignoring case)", 13, 10, 0
msg_path_iso db "PATH=ISO9660 (no UDF anchor at sector 256; BOOTMGR matched byte-exact)", 13, 10, 0
msg_mgr   db "BOOTMGR found:", 0
msg_mgr_text db "BOOTMGR text: ", 0
msg_fix_yes db "BOOTFIX=present (etfsboot.com would run it: Press any key to boot from CD or DVD):", 0
msg_fix_no db "BOOTFIX=absent (no BIOS prompt)", 13, 10, 0
msg_ext1  db " one extent, 0x", 0
msg_ext2  db " bytes at sector 0x", 0
msg_nonce db "NONCE=", 0
msg_ok    db "RESCUEKIT BIOS OK", 13, 10, 0
err_patched db "bytes 8-63 of the boot image were overwritten (a boot info table was patched in)", 0
err_ext   db "no int 13h extensions for the boot drive", 0
err_pvd   db "no ISO 9660 primary volume descriptor at LBA 16", 0
err_vds   db "UDF: no Partition or Logical Volume Descriptor in the main volume descriptor sequence", 0
err_fsd   db "UDF: no File Set Descriptor where the Logical Volume Descriptor points", 0
err_fid   db "UDF: bad File Identifier Descriptor in a directory", 0
err_bigdir db "UDF: a directory on the boot path is larger than this stand-in reads (24 KiB)", 0
err_efe   db "UDF: an Extended File Entry (UDF 2.x), not a plain File Entry: ", 0
err_fe    db "UDF: bad File Entry: ", 0
err_multi db "UDF: not in one extent: ", 0
err_udf_mgr db "BOOTMGR not found in the UDF root directory", 0
err_udf_nonce db "NONCE.TXT not found in the UDF root directory", 0
err_iso_mgr db "BOOTMGR not found in the ISO 9660 root directory (the identifier must be exactly BOOTMGR)", 0
err_iso_nonce db "NONCE.TXT not found in the ISO 9660 root directory", 0
err_mgr_dir db "BOOTMGR is a folder", 0
err_mgr_multi db "BOOTMGR is a multi-extent ISO 9660 file", 0
err_read  db "int 13h AH=42h read error 0x", 0
err_io    db "disc read error", 0
cd001     db "CD001"
name_bootmgr db "BOOTMGR", 0
name_boot db "BOOT", 0
name_bootfix db "BOOTFIX.BIN", 0
name_nonce db "NONCE.TXT", 0
name_dir  db "a directory on the boot path", 0

align 4
dap:
          db 0x10, 0
dap_count dw 1
dap_off   dw 0
dap_seg   dw 0
dap_lba   dq 0

drive     db 0
err_code  db 0
mode      db 0
have_vd   db 0
fid_chars db 0
want_name dw 0
cur_name  dw 0
dir_end   dw 0
dir_lba   dd 0
dir_left  dd 0
root_lba  dd 0
root_len  dd 0
vds_lba   dd 0
vds_left  dd 0
part_start dd 0
fsd_lbn   dd 0
root_icb  dd 0
icb_lbn   dd 0
file_lba  dd 0
file_len  dd 0

; Pad to 4096 bytes: the size of etfsboot.com, loaded by El Torito as 8 x 512-byte sectors.  The end holds the
; reference copy of offsets 8-63 and, in the last 4 bytes, the "all loaded" signature (so code may fill ~4 KiB).
TAIL_SIG equ 0x444E4B52       ; "RKND"
times 4092 - 56 - ($ - $$) db 0
info_table_copy:
    db INFO_FILL
tail_sig dd TAIL_SIG
