from __future__ import annotations

from datetime import date

import pytest

from services.registry import idnumber
from tests.registry.factories import id_number


class TestParse:
    def test_valid_number_yields_birth_date_and_gender(self) -> None:
        parsed = idnumber.parse(id_number(date(1984, 2, 29), serial=124))
        assert parsed.birth_date == date(1984, 2, 29)
        assert parsed.gender == "female"
        assert idnumber.parse(id_number(serial=123)).gender == "male"

    def test_known_public_example_with_x_check_character(self) -> None:
        # The specimen number printed in GB 11643-1999 itself.
        assert idnumber.parse("11010519491231002X").birth_date == date(1949, 12, 31)

    def test_lower_case_x_is_normalised(self) -> None:
        assert idnumber.parse(" 11010519491231002x ").number == "11010519491231002X"

    @pytest.mark.parametrize(
        ("raw", "reason"),
        [
            ("33040219700101123", "18 characters"),
            ("3304021970010112311", "18 characters"),
            ("33040219700101A231", "17 digits"),
            ("X30402197001011231", "17 digits"),
            ("330402197001011232", "check digit"),
            ("330402197002301230", "not a real date"),
        ],
    )
    def test_invalid_numbers_are_refused_without_echoing_them(self, raw: str, reason: str) -> None:
        if reason == "not a real date":
            raw = raw[:17] + idnumber.check_character(raw[:17])
        with pytest.raises(idnumber.InvalidIdNumber) as info:
            idnumber.parse(raw)
        assert reason in str(info.value)
        assert raw not in str(info.value)

    def test_mask_keeps_region_and_last_four(self) -> None:
        assert idnumber.mask("33040219700101123X") == "330402********123X"


class TestPhone:
    @pytest.mark.parametrize(
        "phone", ["13812341234", "19912345678", "0573-82345678", "010-1234567", "057382345678"]
    )
    def test_valid_phones(self, phone: str) -> None:
        assert idnumber.normalise_phone(f" {phone} ") == phone

    @pytest.mark.parametrize(
        "phone",
        ["12812341234", "1381234123", "138123412345", "573-82345678", "0573-123456", "phone"],
    )
    def test_invalid_phones(self, phone: str) -> None:
        with pytest.raises(idnumber.InvalidPhone):
            idnumber.normalise_phone(phone)

    def test_masks(self) -> None:
        assert idnumber.mask_phone("13812341234") == "138****1234"
        assert idnumber.mask_phone("0573-82345678") == "0573-****5678"


class TestAge:
    def test_birthday_counts_on_the_day(self) -> None:
        assert idnumber.age_on(date(1970, 6, 15), date(2020, 6, 14)) == 49
        assert idnumber.age_on(date(1970, 6, 15), date(2020, 6, 15)) == 50

    def test_leap_day_birthdays(self) -> None:
        assert idnumber.age_on(date(2000, 2, 29), date(2018, 2, 28)) == 17
        assert idnumber.age_on(date(2000, 2, 29), date(2018, 3, 1)) == 18
        assert idnumber.years_before(date(2024, 2, 29), 1) == date(2023, 2, 28)

    def test_years_before_agrees_with_age(self) -> None:
        on = date(2025, 3, 1)
        for born in (date(2007, 2, 28), date(2007, 3, 1), date(2007, 3, 2), date(2008, 2, 29)):
            assert (idnumber.age_on(born, on) >= 18) == (born <= idnumber.years_before(on, 18))
